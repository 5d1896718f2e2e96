"""How long a multi-rank job takes to train again after losing a rank, against its own cold start.

In the sandbox (the real operator process, Job controller, kubelet and trainer processes; tiny BERT on
CPU, gloo), a 2-node job starts (the baseline: apply -> both ranks training, measured in the same run),
writes a checkpoint, and then loses a rank: rank 1's trainer process is SIGKILLed (`--fault kill`) or
rank 0's pod is deleted (`--fault delete`). The gang restart is timed from the fault to both ranks
training again (rank 0 logging a loss after its resume; ranks step in lockstep). Printed: both times,
their ratio, the steps trained twice, and whether the target (issue 16: training again within 60 s,
at most one checkpoint interval redone) was met. Exit code 1 when it was not.

    python bench/gang_restart.py [--fault kill|delete] [--steps 1500] [--checkpoint-steps 50]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from search_quality import smoke_assets  # noqa: E402  (the tiny BERT and csvs of the sandbox tests)

TARGET_SECONDS = 60.0
NAMESPACE = "default"
NAME = "gang"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def manifest(steps: int, checkpoint_steps: int) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "task": "text-classification",
            "model": {"source": "pvc://models/tiny-bert"},
            "dataset": {"train": "pvc://datasets/sentiment/train.csv", "columns": {"text": "sentence"}},
            "hyperparameters": {"maxSteps": steps, "batchSize": 4, "maxSeqLength": 16, "evalStrategy": "no"},
            "resources": {"nodes": 2, "gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
            "output": {"uri": f"pvc://models/out-{NAME}", "checkpointSteps": checkpoint_steps},
            "runPolicy": {"backoffLimit": 1, "startupDeadlineSeconds": 600},
        },
    }


def steps_redone(step_at_fault: int, resumed_from: int) -> int:
    """Steps trained a second time after the restart (pure)."""
    return max(0, step_at_fault - resumed_from)


def verdict(restart_seconds: float, redone: int, checkpoint_steps: int) -> tuple[str, bool]:
    """The target line and whether it was missed (pure)."""
    missed = restart_seconds > TARGET_SECONDS or redone > checkpoint_steps
    what = f"training again <= {TARGET_SECONDS:.0f} s, <= {checkpoint_steps} steps redone"
    return f"target ({what}): {'NOT met' if missed else 'met'}", missed


class GangRun:
    """One 2-node job in a sandbox, observed through the API and the pods' log files."""

    def __init__(self, sandbox: Any) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
        self.sandbox, self.core, self.custom = sandbox, client.CoreV1Api(api), client.CustomObjectsApi(api)

    def status(self) -> dict[str, Any]:
        ftj = self.custom.get_namespaced_custom_object("finetune.dev", "v1alpha1", NAMESPACE, "finetunejobs", NAME)
        return ftj.get("status") or {}

    def running_pods(self) -> dict[int, Any]:
        pods = self.core.list_namespaced_pod(NAMESPACE, label_selector=f"batch.kubernetes.io/job-name={NAME}").items
        return {
            int(p.metadata.labels[COMPLETION_INDEX]): p
            for p in pods
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        }

    def log(self, pod: Any) -> str:
        path = self.sandbox.data_dir / "pods" / NAMESPACE / pod.metadata.name / "trainer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def training(self, after: str | None = None, excluding: set[str] = frozenset()) -> bool:
        """Both ranks' pods run (none of `excluding`) and rank 0 logged a loss (after the line `after`)."""
        pods = self.running_pods()
        if len(pods) < 2 or {p.metadata.name for p in pods.values()} & excluding:
            return False
        text = self.log(pods[0])
        if after is not None:
            if after not in text:
                return False
            text = text.split(after, 1)[1]
        return "'loss'" in text


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def inflict(fault: str, run: GangRun, pods: dict[int, Any], kubectl: list[str]) -> None:
    if fault == "kill":
        [trainer] = [c for c in pods[1].status.container_statuses if c.name == "trainer"]
        root = psutil.Process(int(trainer.container_id.removeprefix("process://")))
        [worker] = [p for p in root.children(recursive=True) if "LOCAL_RANK" in p.environ()]
        os.kill(worker.pid, signal.SIGKILL)
    else:
        subprocess.run([*kubectl, "delete", "pod", pods[0].metadata.name, "-n", NAMESPACE, "--wait=false"], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", choices=("kill", "delete"), default="kill")
    parser.add_argument("--steps", type=int, default=1500, help="maxSteps: long enough to be running at the fault")
    parser.add_argument("--checkpoint-steps", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    from finetune_cli.demo import kubectl_binary, prepare_volumes
    from finetune_sandbox.cluster import Sandbox, SandboxThread

    work = Path(tempfile.mkdtemp(prefix="gang-restart-"))
    assets = smoke_assets(work / "assets")
    load_before = os.getloadavg()
    runner = SandboxThread(Sandbox(work / "sandbox", gpus=0))
    runner.start()
    try:
        sandbox = runner.sandbox
        prepare_volumes(sandbox, NAMESPACE, assets)
        run = GangRun(sandbox)
        kubectl = [kubectl_binary(), "--kubeconfig", str(sandbox.kubeconfig)]
        applied = time.monotonic()
        body = yaml.safe_dump(manifest(args.steps, args.checkpoint_steps))
        subprocess.run([*kubectl, "apply", "-f", "-"], input=body, text=True, check=True, capture_output=True)
        wait(run.training, args.timeout, "both ranks to train")
        cold_start = time.monotonic() - applied
        wait(lambda: run.status().get("checkpoint"), args.timeout, "a complete checkpoint")
        pods = run.running_pods()
        step_at_fault = int((run.status().get("progress") or {}).get("step") or 0)
        faulted = time.monotonic()
        inflict(args.fault, run, pods, kubectl)
        old = {p.metadata.name for p in pods.values()}
        wait(lambda: run.training(after="resuming from", excluding=old), args.timeout, "the ranks to train again")
        restart = time.monotonic() - faulted
        # The resumed step, from the new rank 0's log ("resuming from .../checkpoint-STEP").
        text = run.log(run.running_pods()[0])
        resumed = int(text.split("resuming from", 1)[1].split("checkpoint-", 1)[1].split()[0])
        status = run.status()
    finally:
        runner.stop()
    redone = steps_redone(step_at_fault, resumed)
    line, missed = verdict(restart, redone, args.checkpoint_steps)
    print(
        f"fault: {args.fault}; load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} (2 ranks on this machine)"
    )
    print(f"cold start (apply -> both ranks training): {cold_start:.1f} s")
    print(
        f"gang restart {restart:.1f} s (fault -> both ranks training again); ratio restart/cold start: "
        f"{restart / cold_start:.2f}"
    )
    print(f"step at the fault (last reported) {step_at_fault}, resumed from {resumed}: {redone} steps redone")
    last = status.get("lastRestart") or {}
    print(
        f"status: retries {status.get('retries')}, restarts {status.get('restarts')}, last: rank {last.get('rank')} {last.get('reason')}"
    )
    print(line)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
