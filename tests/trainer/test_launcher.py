"""Multi-process pods: python -m finetune_trainer re-runs itself under torchrun and keeps the exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from finetune_trainer.errors import EXIT_INVALID_DATA, EXIT_OK, EXIT_OUT_OF_MEMORY, EXIT_PREEMPTED
from finetune_trainer.launcher import exit_code_for, needs_launcher, processes_in_job, torchrun_command
from trainer_data import sentiment_rows, write_csv


def test_launcher_only_for_multi_process_pods_not_yet_under_torchrun():
    assert not needs_launcher({})
    assert not needs_launcher({"NNODES": "1", "NPROC_PER_NODE": "1"})
    assert needs_launcher({"PET_NNODES": "2", "PET_NPROC_PER_NODE": "1"})
    assert needs_launcher({"NPROC_PER_NODE": "4"})
    assert not needs_launcher({"NPROC_PER_NODE": "4", "LOCAL_RANK": "0"})
    assert processes_in_job({"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4"}) == 8


def test_torchrun_command_uses_the_pod_environment():
    env = {
        "PET_NNODES": "2",
        "PET_NPROC_PER_NODE": "4",
        "PET_NODE_RANK": "1",
        "PET_MASTER_ADDR": "job-0.job.ns.svc",
        "PET_MASTER_PORT": "29500",
    }
    command = torchrun_command("/etc/finetune/config.json", env)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert "--nnodes=2" in command and "--nproc-per-node=4" in command and "--node-rank=1" in command
    assert "--tee=3" in command  # each worker's lines through torchrun, marked [rankN]: (LOG_LINE_PREFIX)
    assert "--master-addr=job-0.job.ns.svc" in command and command[-3:] == [
        "--module",
        "finetune_trainer",
        "/etc/finetune/config.json",
    ]


def test_exit_codes_are_recovered_from_the_termination_message():
    assert exit_code_for(0, None, False) == EXIT_OK
    assert exit_code_for(1, '{"reason": "InvalidData", "message": "x"}', False) == EXIT_INVALID_DATA
    assert exit_code_for(1, '{"reason": "OutOfMemory", "message": "x"}', False) == EXIT_OUT_OF_MEMORY
    assert exit_code_for(1, None, True) == EXIT_PREEMPTED
    # A worker that saved and stopped because another pod's rank got SIGTERM: 143, not a crash.
    assert exit_code_for(1, '{"reason": "StoppedByPeer", "message": "x"}', False) == EXIT_PREEMPTED
    assert exit_code_for(1, '{"reason": "PeerLost", "message": "x"}', False) == 1
    # Storage failures keep their codes through torchrun, so the Job's podFailurePolicy sees the final ones.
    assert exit_code_for(1, '{"reason": "StorageAccessDenied", "message": "x"}', False) == 6
    assert exit_code_for(1, '{"reason": "StorageUnavailable", "message": "x"}', False) == 8
    assert exit_code_for(1, "not json", False) == 1
    assert exit_code_for(-9, None, False) == 1


@pytest.mark.slow
def test_two_processes_train_one_model_through_torchrun(tiny_bert, tmp_path, write_config):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(64, seed=1))
    out = tmp_path / "out"
    config = write_config(
        task="text-classification",
        model_uri=tiny_bert,
        train_uri=train,
        output_uri=str(out),
        max_steps=4,
        batch_size=8,
        learning_rate=5e-3,
        checkpoint_steps=2,
        eval_strategy="no",
        max_seq_length=16,
    )
    env = {
        **os.environ,
        "NNODES": "1",
        "NPROC_PER_NODE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29533",
        "OMP_NUM_THREADS": "1",
        "FINETUNE_TERMINATION_LOG": str(tmp_path / "log"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "finetune_trainer", config], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # two processes of batch 8 each: 4 steps see 64 samples
    assert metrics["global_step"] == 4 and metrics["epoch"] == pytest.approx(1.0)
    assert (out / "checkpoints" / "checkpoint-4" / "COMPLETE").exists()
