"""The finetune-operator trainer: one JSON config in, a fine-tuned model, metrics.json and a model card out.

`main` imports the trainer (torch, transformers) only when called, so that `import finetune_trainer.arguments`
(the operator's contract tests) does not pull in torch.
"""

import sys
import traceback

from finetune_trainer.errors import classify_exception, write_termination_message


def main(config_path: str) -> int:
    """Run one fine-tuning job in-process and return its exit code (see docs/pod-contract.md)."""
    try:
        # Late on purpose: run.py loads torch and transformers, which the config contract must not need.
        from finetune_trainer.run import main as run_main
    except Exception as exc:  # noqa: BLE001 - e.g. torch cannot load its CUDA libraries: still a crash with a message
        traceback.print_exc(file=sys.stderr)
        code, reason = classify_exception(exc)
        write_termination_message(reason, f"cannot load the trainer: {exc}")
        return code
    return run_main(config_path)
