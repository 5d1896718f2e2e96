"""The trainer image's command line, run from this environment (the Dockerfile and the built image: tests/images/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_cli_help_and_missing_config():
    env = {**os.environ, "FINETUNE_CONFIG": ""}
    done = subprocess.run(
        [sys.executable, "-m", "finetune_trainer", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0 and "usage: python -m finetune_trainer" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "finetune_trainer"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 3 and "FINETUNE_CONFIG" in done.stderr


def test_importing_the_contract_does_not_import_torch():
    code = (
        "import sys, finetune_trainer, finetune_trainer.arguments; assert 'torch' not in sys.modules, 'torch imported'"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).returncode == 0


def test_cli_exit_code_and_termination_message_for_bad_config(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"task": "summarize", "model_uri": "m", "train_uri": "t", "output_uri": "o"}')
    log = tmp_path / "termination-log"
    env = {**os.environ, "FINETUNE_CONFIG": str(config), "FINETUNE_TERMINATION_LOG": str(log)}
    done = subprocess.run(
        [sys.executable, "-m", "finetune_trainer"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 3
    message = json.loads(log.read_text())
    assert message["reason"] == "InvalidData" and "task must be one of" in message["message"]
