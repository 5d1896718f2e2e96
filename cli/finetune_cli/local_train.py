"""`ftjob train job.yaml`: run a FineTuneJob's trainer on this machine, no cluster.

The same spec parsing, the same rendered trainer config and the same trainer entrypoint as in a pod;
pvc://CLAIM/path resolves to PVC_ROOT/CLAIM/path. Practitioners check a spec on a data sample here
before spending GPU hours.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from finetune_operator.builders import pvc_claims
from finetune_operator.builders.trainer_config import render_trainer_config
from finetune_operator.spec import InvalidSpec, parse_spec


def load_manifest(path: Path) -> tuple[str, dict[str, Any]]:
    """A FineTuneJob manifest or a bare spec -> (name, spec dict)."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        from .commands import UserError

        raise UserError(f"cannot read {path}: {exc}") from None
    if isinstance(document, dict) and "spec" in document:
        return (document.get("metadata") or {}).get("name") or path.stem, document["spec"]
    return path.stem, document or {}


def run_local(args: argparse.Namespace) -> int:
    from .commands import UserError

    name, spec_dict = load_manifest(Path(args.file))
    if args.max_steps is not None:
        spec_dict = {
            **spec_dict,
            "hyperparameters": {**(spec_dict.get("hyperparameters") or {}), "maxSteps": args.max_steps},
        }
    try:
        spec = parse_spec(spec_dict)
    except InvalidSpec as exc:
        raise UserError(f"{args.file}: {exc}") from None
    config = render_trainer_config(spec, name, "local")
    pvc_root = Path(args.pvc_root).resolve()
    mounts = {claim: str(pvc_root / claim) for claim in pvc_claims(spec)}
    with tempfile.TemporaryDirectory(prefix="ftjob-train-") as workdir:
        config_path = Path(workdir) / "config.json"
        config_path.write_text(json.dumps(config, indent=2))
        os.environ["FINETUNE_VOLUME_MOUNTS"] = json.dumps(mounts)
        os.environ["FINETUNE_TERMINATION_LOG"] = str(Path(workdir) / "termination-log")
        from finetune_trainer import main as train_main

        code = train_main(str(config_path))
        message = Path(workdir, "termination-log")
        if code != 0 and message.exists():
            print(f"ftjob train: the trainer stopped with exit code {code}: {message.read_text()}")
        return code
