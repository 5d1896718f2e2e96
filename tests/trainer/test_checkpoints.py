"""Checkpoints: COMPLETE markers, rotation, SIGTERM stop-and-save, automatic resume."""

from __future__ import annotations

import json
import os
import signal

import finetune_trainer.run as run
from finetune_trainer import main
from finetune_trainer.checkpoints import (
    checkpoints_to_delete,
    complete_checkpoints,
    mark_complete,
    newest_complete_checkpoint,
    remove_incomplete_checkpoints,
)
from finetune_trainer.errors import EXIT_OK, EXIT_PREEMPTED
from transformers import TrainerCallback


def _checkpoint(root, step, complete=True):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if complete:
        mark_complete(str(folder))
    return str(folder)


def test_newest_complete_checkpoint_ignores_unmarked_folders(tmp_path):
    _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 20)
    _checkpoint(tmp_path, 30, complete=False)
    (tmp_path / "checkpoint-x").mkdir()
    assert newest_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert remove_incomplete_checkpoints(str(tmp_path)) == [str(tmp_path / "checkpoint-30")]
    assert not (tmp_path / "checkpoint-30").exists()
    assert newest_complete_checkpoint(str(tmp_path / "missing")) is None


def test_rotation_keeps_newest_and_spares_best(tmp_path):
    complete = [(s, str(tmp_path / f"checkpoint-{s}")) for s in (10, 20, 30, 40)]
    assert checkpoints_to_delete(complete, 2, None) == [complete[0][1], complete[1][1]]
    assert checkpoints_to_delete(complete, 2, complete[0][1]) == [complete[1][1]]
    assert checkpoints_to_delete(complete, 0, None) == [c[1] for c in complete[:3]]  # never keeps fewer than one


class _SigtermAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_a_checkpoint_then_the_next_run_resumes_from_it(
    tiny_bert, sentiment_files, write_config, tmp_path, monkeypatch
):
    train, validation = sentiment_files
    out = tmp_path / "out"
    config = dict(
        task="text-classification",
        model_uri=tiny_bert,
        train_uri=train,
        validation_uri=validation,
        output_uri=str(out),
        max_steps=8,
        batch_size=8,
        learning_rate=5e-3,
        checkpoint_steps=4,
        checkpoints_to_keep=1,
        eval_strategy="no",
        max_seq_length=16,
        logging_steps=1,
    )
    assembled = run.assemble_callbacks
    monkeypatch.setattr(run, "assemble_callbacks", lambda *a: [_SigtermAt(3)] + assembled(*a))
    previous_handler = signal.getsignal(signal.SIGTERM)

    assert main(write_config(**config)) == EXIT_PREEMPTED
    assert signal.getsignal(signal.SIGTERM) == previous_handler  # the handler is removed again
    checkpoints = out / "checkpoints"
    assert [s for s, _ in complete_checkpoints(str(checkpoints))] == [3]
    assert not (out / "metrics.json").exists()
    state = json.loads((checkpoints / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    for piece in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "model.safetensors"):
        assert (checkpoints / "checkpoint-3" / piece).exists(), piece

    # A half-written later checkpoint (no COMPLETE marker) must be ignored and removed.
    (checkpoints / "checkpoint-5").mkdir()
    (checkpoints / "checkpoint-5" / "trainer_state.json").write_text("{broken")
    monkeypatch.setattr(run, "assemble_callbacks", assembled)
    assert main(write_config(**config)) == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 3
    assert metrics["global_step"] == 8
    assert not (checkpoints / "checkpoint-5").exists()
    # the resumed run trained only the remaining 5 steps
    final = json.loads((checkpoints / "checkpoint-8" / "trainer_state.json").read_text())
    logged_steps = [entry["step"] for entry in final["log_history"] if "loss" in entry]
    assert logged_steps == list(range(1, 9))
    assert [s for s, _ in complete_checkpoints(str(checkpoints))] == [8]  # checkpoints_to_keep=1


def test_resume_with_larger_max_steps_continues_from_the_last_checkpoint(
    tiny_bert, sentiment_files, write_config, tmp_path
):
    train, validation = sentiment_files
    out = tmp_path / "out"
    config = dict(
        task="text-classification",
        model_uri=tiny_bert,
        train_uri=train,
        output_uri=str(out),
        max_steps=4,
        batch_size=8,
        learning_rate=5e-3,
        checkpoint_steps=2,
        checkpoints_to_keep=2,
        eval_strategy="no",
        max_seq_length=16,
    )
    assert main(write_config(**config)) == EXIT_OK
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] is None
    config["max_steps"] = 6
    assert main(write_config(**config)) == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 4 and metrics["global_step"] == 6
    assert [s for s, _ in complete_checkpoints(str(out / "checkpoints"))] == [4, 6]


def test_cli_process_exits_143_with_a_complete_checkpoint_on_sigterm(
    tiny_bert, sentiment_files, write_config, tmp_path
):
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    config = write_config(
        task="text-classification",
        model_uri=tiny_bert,
        train_uri=sentiment_files[0],
        output_uri=str(out),
        max_steps=100000,
        batch_size=8,
        learning_rate=5e-3,
        checkpoint_steps=100000,
        eval_strategy="no",
        max_seq_length=16,
        logging_steps=1,
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "finetune_trainer", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        for line in process.stdout:  # wait until optimizer steps are running
            if "'loss'" in line:
                break
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == EXIT_PREEMPTED
    finally:
        process.kill()
    steps = [s for s, _ in complete_checkpoints(str(out / "checkpoints"))]
    assert len(steps) == 1 and steps[0] >= 1
