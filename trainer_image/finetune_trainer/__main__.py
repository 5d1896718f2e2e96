"""`python -m finetune_trainer [CONFIG]`: CONFIG defaults to the FINETUNE_CONFIG environment variable."""

import os
import sys

from finetune_trainer import main
from finetune_trainer.launcher import launch, needs_launcher

USAGE = """usage: python -m finetune_trainer [CONFIG_JSON]

Fine-tune a model as described by one JSON file (the fields of finetune_trainer.arguments).
CONFIG_JSON defaults to the FINETUNE_CONFIG environment variable.
Exit codes: 0 done, 3 invalid data or config, 4 out of memory, 5 communication timeout,
143 stopped by SIGTERM after saving a checkpoint, other non-zero: crash."""


def _cli(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    config_path = argv[0] if argv else os.environ.get("FINETUNE_CONFIG")
    if not config_path:
        print(
            "finetune_trainer: give the config path as the argument or in FINETUNE_CONFIG\n\n" + USAGE, file=sys.stderr
        )
        return 3
    if needs_launcher():
        return launch(config_path)
    return main(config_path)


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
