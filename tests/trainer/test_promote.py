"""Promotion of a search's best trial: moves, replaces, removes, survives a crash half-way, and says so."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from finetune_trainer import promote as promote_module
from finetune_trainer.errors import InvalidData
from finetune_trainer.promote import LocalStore, main, open_store, promote


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def trial(folder: Path, tag: str) -> Path:
    """A trial's output as the trainer leaves it: model, card, metrics, an optional merged model, checkpoints."""
    for name in ("config.json", "model.safetensors", "metrics.json", "README.md", "merged/model.safetensors"):
        write(folder / name, f"{tag}:{name}")
    write(folder / "checkpoints" / "checkpoint-40" / "COMPLETE", "")
    return folder


@pytest.fixture
def claim(tmp_path, termination_log):
    """A `models` claim mounted at tmp_path/models holding out/ with three trials and an older model."""
    root = tmp_path / "models"
    out = root / "out"
    for index in range(3):
        trial(out / "trials" / f"job-t{index}", f"t{index}")
    write(out / "config.json", "old:config.json")
    write(out / "merged" / "stale.bin", "old")
    write(out / "keep-me.txt", "user file")
    environ = {
        "FINETUNE_VOLUME_MOUNTS": json.dumps({"models": str(root)}),
        "FINETUNE_TERMINATION_LOG": str(termination_log),
    }
    return out, environ


def args(best: int, *, keep: bool = False) -> list[str]:
    base = "pvc://models/out"
    removes = [] if keep else [f"{base}/trials/job-t{i}" for i in range(3)]
    return ["--best", f"{base}/trials/job-t{best}", "--output", base, *[a for r in removes for a in ("--remove", r)]]


def test_best_model_replaces_the_output_and_other_trials_are_removed(claim, termination_log):
    out, environ = claim
    assert main(args(1), environ) == 0
    assert (out / "config.json").read_text() == "t1:config.json"
    assert (out / "model.safetensors").read_text() == "t1:model.safetensors"
    assert (out / "README.md").read_text() == "t1:README.md"
    # A folder entry is replaced whole: the older model's stale file does not survive in it.
    assert os.listdir(out / "merged") == ["model.safetensors"]
    # Checkpoints are the trial's resumable state, not the model; they go with the trial folder.
    assert not (out / "checkpoints").exists()
    assert not (out / "trials").exists() or os.listdir(out / "trials") == []
    assert (out / "keep-me.txt").read_text() == "user file"
    body = json.loads(termination_log.read_text())
    assert body["reason"] == "Completed" and "moved 5 entries, removed 3 folders" in body["message"]


def test_keeping_trial_outputs_moves_the_model_but_removes_nothing(claim):
    out, environ = claim
    assert main(args(2, keep=True), environ) == 0
    assert (out / "metrics.json").read_text() == "t2:metrics.json"
    assert sorted(os.listdir(out / "trials")) == ["job-t0", "job-t1", "job-t2"]
    # What stays of the best trial: its checkpoints only.
    assert os.listdir(out / "trials" / "job-t2") == ["checkpoints"]


def test_running_again_after_success_changes_nothing(claim):
    out, environ = claim
    assert main(args(0), environ) == 0
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert main(args(0), environ) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert (out / "config.json").read_text() == "t0:config.json"


def test_a_crash_half_way_is_reported_and_a_rerun_converges(claim, termination_log, monkeypatch):
    out, environ = claim
    real_move = LocalStore.move
    moves = []

    def move_then_crash(self, source, target):
        if len(moves) == 2:
            raise OSError(errno.EIO, "I/O error", target)
        moves.append(target)
        real_move(self, source, target)

    monkeypatch.setattr(LocalStore, "move", move_then_crash)
    assert main(args(1), environ) == 1
    assert json.loads(termination_log.read_text())["reason"] == "PromoteFailed"
    assert (out / "trials" / "job-t0").exists()  # nothing removed before every entry moved

    monkeypatch.setattr(LocalStore, "move", real_move)
    assert main(args(1), environ) == 0
    for name in ("config.json", "model.safetensors", "metrics.json", "README.md"):
        assert (out / name).read_text() == f"t1:{name}"
    assert not (out / "trials" / "job-t0").exists() and not (out / "trials" / "job-t1").exists()


def test_missing_best_folder_without_a_promoted_model_is_invalid_input(tmp_path, termination_log):
    out = tmp_path / "out"
    write(out / "notes.txt")
    environ = {"FINETUNE_TERMINATION_LOG": str(termination_log)}
    code = main(["--best", f"file://{out}/trials/job-t9", "--output", f"file://{out}"], environ)
    assert code == 3
    body = json.loads(termination_log.read_text())
    assert body["reason"] == "InvalidData" and "job-t9 does not exist" in body["message"]


def test_a_remove_folder_holding_the_output_is_refused_before_anything_moves(claim, termination_log):
    out, environ = claim
    code = main(
        ["--best", "pvc://models/out/trials/job-t0", "--output", "pvc://models/out", "--remove", "pvc://models"],
        environ,
    )
    assert code == 3
    assert "would delete the output" in json.loads(termination_log.read_text())["message"]
    assert (out / "config.json").read_text() == "old:config.json"


def test_an_entry_that_would_replace_the_trials_folder_is_skipped(tmp_path):
    out = tmp_path / "out"
    best = trial(out / "trials" / "job-t0", "t0")
    write(best / "trials" / "x")
    result = promote(LocalStore(), str(best), str(out), [])
    assert "trials" not in result.moved and (out / "config.json").read_text() == "t0:config.json"
    assert (best / "trials" / "x").exists()


def test_moves_across_filesystems_fall_back_to_copying(tmp_path, monkeypatch):
    out = tmp_path / "out"
    best = trial(out / "trials" / "job-t0", "t0")

    def cross_device(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(promote_module.os, "replace", cross_device)
    promote(LocalStore(), str(best), str(out), [str(best)])
    assert (out / "merged" / "model.safetensors").read_text() == "t0:merged/model.safetensors"
    assert not best.exists()


def test_uris_must_share_one_kind_of_storage_and_name_mounted_claims():
    with pytest.raises(InvalidData, match="mix s3://"):
        open_store("s3://b/out/trials/t0", "pvc://models/out", [], {})
    with pytest.raises(InvalidData, match="cannot promote hf://"):
        open_store("hf://org/model", "/out", [], {})
    with pytest.raises(InvalidData, match="claim 'models' is not mounted"):
        open_store("pvc://models/out/trials/t0", "pvc://models/out", [], {"FINETUNE_VOLUME_MOUNTS": "{}"})


def test_module_runs_as_a_command_with_the_pod_contracts_exit_codes(tmp_path):
    out = tmp_path / "out"
    trial(out / "trials" / "job-t0", "t0")
    log = tmp_path / "termination-log"
    env = {**os.environ, "FINETUNE_TERMINATION_LOG": str(log)}
    command = [sys.executable, "-m", "finetune_trainer.promote", "--output", f"file://{out}"]
    done = subprocess.run(
        [*command, "--best", f"file://{out}/trials/job-t0", "--remove", f"file://{out}/trials/job-t0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "config.json").read_text() == "t0:config.json" and not (out / "trials" / "job-t0").exists()
    assert "moved config.json" in done.stderr
    bad = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 3
    assert "--best" in json.loads(log.read_text())["message"]
