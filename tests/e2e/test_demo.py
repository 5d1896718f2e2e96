"""`ftjob demo`, the README's first command: a real all-MiniLM-L6-v2 fine-tuning through the whole sandbox loop."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ACCURACY_LINE = re.compile(r"Validation accuracy: ([\d.]+)% before fine-tuning -> ([\d.]+)% after")


def test_demo_fine_tunes_minilm_to_high_accuracy_and_writes_the_model(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    ftjob = shutil.which("ftjob") or str(Path(sys.executable).with_name("ftjob"))

    # On 2 cores this takes 1-2 minutes alone, longer while other tests load the machine.
    result = subprocess.run(
        [ftjob, "demo", "--data-dir", str(data_dir), "--timeout", "540"], capture_output=True, text=True, timeout=600
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Result: Succeeded (Completed)" in result.stdout, output[-4000:]
    accuracy = ACCURACY_LINE.search(result.stdout)
    assert accuracy is not None, result.stdout
    before, after = float(accuracy.group(1)) / 100, float(accuracy.group(2)) / 100
    assert after >= 0.8, accuracy.group(0)
    assert after > before, accuracy.group(0)

    model_dir = data_dir / "pvcs" / "default" / "models" / "sentiment-minilm"
    assert f"(on this machine: {model_dir})" in result.stdout
    metrics = json.loads((model_dir / "metrics.json").read_text())
    # The printed numbers are the trainer's own, not something the demo made up.
    assert f"{metrics['eval_accuracy']:.1%}" == accuracy.group(2) + "%"
    assert f"{metrics['eval_accuracy_before']:.1%}" == accuracy.group(1) + "%"
    assert metrics["task"] == "text-classification"
    card = (model_dir / "README.md").read_text()
    assert "base_model: pvc://models/all-MiniLM-L6-v2" in card
    assert "| accuracy |" in card
    assert (model_dir / "model.safetensors").exists() and (model_dir / "config.json").exists()
    # The demo stops its sandbox: neither the operator nor a trainer it started outlives it.
    assert processes_using(data_dir) == []


def processes_using(data_dir: Path) -> list[str]:
    """Command lines of live processes whose arguments or environment mention data_dir."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(process.info["cmdline"] or [])
            environ = " ".join((process.info["environ"] or {}).values())
            if str(data_dir) in cmdline or str(data_dir) in environ:
                found.append(f"{process.pid}: {cmdline}")
    return found
