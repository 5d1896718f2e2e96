"""Multi-process launch: one pod runs one process per GPU through torch's elastic launcher (torchrun).

The operator sets PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT,
which torchrun reads as its defaults. When a pod has more than one process to run, `python -m
finetune_trainer` re-runs itself under torchrun and keeps the pod contract's exit codes: torchrun
reports any worker failure as 1, so the code is recovered from the reason the worker wrote to the
termination message (InvalidData -> 3, ...).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from finetune_trainer.errors import (
    EXIT_CODES_BY_REASON,
    EXIT_COMMUNICATION_TIMEOUT,
    EXIT_CRASH,
    EXIT_OK,
    EXIT_OUT_OF_MEMORY,
    EXIT_PREEMPTED,
    STOPPED,
    STOPPED_BY_PEER,
    termination_log_path,
)

_CODES = {
    **EXIT_CODES_BY_REASON,  # InvalidData, the storage failures, HubUnreachable
    "OutOfMemory": EXIT_OUT_OF_MEMORY,
    "CommunicationTimeout": EXIT_COMMUNICATION_TIMEOUT,
    # Workers that saved a checkpoint and stopped (this pod's SIGTERM, or another rank's) exit 143.
    STOPPED: EXIT_PREEMPTED,
    STOPPED_BY_PEER: EXIT_PREEMPTED,
}


# torchrun's mark on each worker line (the form torch's own C++ warnings use): "[rank1]: ...".
LOG_LINE_PREFIX = "[rank${rank}]:"


def _int(environ, *names: str) -> int:
    for name in names:
        if environ.get(name):
            return int(environ[name])
    return 1


def processes_in_job(environ=os.environ) -> int:
    return _int(environ, "PET_NNODES", "NNODES") * _int(environ, "PET_NPROC_PER_NODE", "NPROC_PER_NODE")


def needs_launcher(environ=os.environ) -> bool:
    """True in a pod of a multi-process job that torchrun has not started yet (no LOCAL_RANK)."""
    return "LOCAL_RANK" not in environ and processes_in_job(environ) > 1


def torchrun_command(config_path: str, environ=os.environ) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={_int(environ, 'PET_NNODES', 'NNODES')}",
        f"--nproc-per-node={_int(environ, 'PET_NPROC_PER_NODE', 'NPROC_PER_NODE')}",
        f"--node-rank={environ.get('PET_NODE_RANK') or environ.get('NODE_RANK') or 0}",
        f"--master-addr={environ.get('PET_MASTER_ADDR') or environ.get('MASTER_ADDR') or '127.0.0.1'}",
        f"--master-port={environ.get('PET_MASTER_PORT') or environ.get('MASTER_PORT') or '29500'}",
        # Every worker line through torchrun, marked with its rank (LOG_LINE_PREFIX below): several ranks
        # share one pod log, and `ftjob logs --rank N` keeps rank N's lines.
        "--tee=3",
        "--module",
        "finetune_trainer",
        config_path,
    ]


def exit_code_for(returncode: int, message_text: str | None, terminated: bool) -> int:
    """The pod's exit code from torchrun's return code and the workers' termination message. Pure."""
    if returncode == EXIT_OK:
        return EXIT_OK
    if terminated:
        return EXIT_PREEMPTED
    try:
        reason = json.loads(message_text or "{}").get("reason")
    except (json.JSONDecodeError, AttributeError):
        reason = None
    return _CODES.get(reason, returncode if returncode > 0 else EXIT_CRASH)


def launch(config_path: str, environ=os.environ) -> int:
    """Run the job under torchrun; forward SIGTERM so the workers can save a checkpoint and stop."""
    log_path = termination_log_path(environ)
    child = subprocess.Popen(
        torchrun_command(config_path, environ),
        env={**environ, "PYTHONUNBUFFERED": "1", "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": LOG_LINE_PREFIX},
    )
    terminated = False

    def forward(signum, _frame):
        nonlocal terminated
        terminated = True
        child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        returncode = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    message = None
    if log_path and os.path.isfile(log_path):
        with open(log_path, encoding="utf-8") as f:
            message = f.read()
    return exit_code_for(returncode, message, terminated)
