"""Multi-rank jobs in the sandbox (issue 16, item 2): 2 nodes x 1 process and 1 node x 2 processes, on CPU
with gloo, run through torchrun to Succeeded; rank 0 alone reports progress, writes the model and leaves a
termination message with metrics; `ftjob logs NAME --rank N` shows rank N's log.

1 node x 2 processes is `gpusPerNode: 2` on the sandbox's fake GPUs: one process per GPU, and with no CUDA
the trainer trains on CPU. Each shape runs one small job for the whole module. The last test runs two
multi-rank jobs at once: every pod of the sandbox is 127.0.0.1, so the sandbox's kubelet gives each job's
rendezvous a port of its own, as each rank-0 pod has its own IP on a cluster.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from finetune_sandbox.cluster import wait_for
from sandbox_support import Cluster, finetunejob, write_sentiment_csv

pytestmark = pytest.mark.e2e

NAME = "multi"
STEPS = 6
SHAPES = {
    "2-nodes-x-1-process": {"nodes": 2, "gpusPerNode": 0},
    "1-node-x-2-processes": {"nodes": 1, "gpusPerNode": 2},
}
# The sender's line on its first delivered report (reporting/sender.py): one per process that reports.
DELIVERED = "finetune_trainer: first progress report delivered to "
DONE = "finetune_trainer: done: "  # the trainer's closing line, after rank 0 wrote the results
# How torchrun (and torch's C++ warnings) mark a line as one process's.
MARK = re.compile(r"^\[rank(\d+)\]:")


@dataclass
class Run:
    """One finished job of one shape, as a test finds it."""

    cluster: Cluster
    namespace: str
    nodes: int
    per_node: int
    status: dict[str, Any]
    pods: dict[int, Any]  # by completion index (the node rank)
    logs: dict[int, str]  # each pod's log, read through the API

    @property
    def output(self) -> Path:
        return self.cluster.pvc_dir(self.namespace, "models") / f"out-{NAME}"

    def termination(self, node: int) -> Any:
        [trainer] = [c for c in self.pods[node].status.container_statuses if c.name == "trainer"]
        return trainer.state.terminated


def ftjob(run: Run, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("ftjob") or str(Path(sys.executable).with_name("ftjob"))
    command = [binary, "--kubeconfig", str(run.cluster.kubeconfig), *args, "-n", run.namespace]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=list(SHAPES))
def run(request: pytest.FixtureRequest, cluster: Cluster, tiny_model_source: Path) -> Run:
    # The `team` fixture's namespace, once per shape rather than once per test.
    namespace = cluster.namespace()
    shutil.copytree(tiny_model_source, cluster.pvc_dir(namespace, "models") / "tiny-bert")
    write_sentiment_csv(cluster.pvc_dir(namespace, "datasets") / "sentiment" / "train.csv")
    resources = SHAPES[request.param]
    # Evaluations at steps 3 and 6 land in status.progress before training ends (the later one is final).
    hyperparameters = {"maxSteps": STEPS, "evalStrategy": "steps", "evalSteps": 3}
    cluster.apply(finetunejob(NAME, namespace, resources=resources, hyperparameters=hyperparameters))
    status = cluster.wait_phase(namespace, NAME, "Succeeded", "Failed", timeout=300)
    assert status["phase"] == "Succeeded", status

    # The throttled status writer lands the last report within one interval of the end.
    def final_progress() -> dict[str, Any] | None:
        latest = cluster.status(namespace, NAME)
        return latest if (latest.get("progress") or {}).get("step") == STEPS else None

    status = wait_for(final_progress, 30, message=f"step {STEPS} in status.progress")
    listed = cluster.pods(namespace, NAME)
    pods = {int(p.metadata.labels["batch.kubernetes.io/job-completion-index"]): p for p in listed}
    assert len(listed) == len(pods) == resources["nodes"], "one pod per node: no rank was restarted"
    logs = {node: cluster.core.read_namespaced_pod_log(pod.metadata.name, namespace) for node, pod in pods.items()}
    return Run(cluster, namespace, resources["nodes"], max(1, resources["gpusPerNode"]), status, pods, logs)


def test_one_pod_per_node_and_only_rank_0s_pod_has_a_termination_message_with_metrics(run: Run) -> None:
    assert sorted(run.pods) == list(range(run.nodes))
    assert run.status["retries"] == 0
    for node in run.pods:
        assert run.termination(node).exit_code == 0 and run.termination(node).reason == "Completed"

    message = json.loads(run.termination(0).message)
    assert message["reason"] == "Completed" and message["message"] == f"trained to step {STEPS}"
    assert set(message["metrics"]) >= {"eval_loss", "eval_accuracy"}
    # Another node's pod finishes without one: only rank 0 writes it on success (docs/pod-contract.md).
    for node in range(1, run.nodes):
        assert not run.termination(node).message, run.termination(node).message


def test_only_rank_0_reports_progress(run: Run) -> None:
    # Each process that sends a report logs its first delivery once; rank 1 shares rank 0's URL and token,
    # so had it reported too, its line would be in its own pod's log, or a second one in the shared log.
    delivered = {node: log.count(DELIVERED) for node, log in run.logs.items()}
    assert delivered == {0: 1, **dict.fromkeys(range(1, run.nodes), 0)}, delivered
    progress = run.status["progress"]
    assert progress["totalSteps"] == STEPS and progress["percent"] == 100


def test_the_output_holds_one_model_and_no_copies_per_rank(run: Run) -> None:
    weights = sorted(str(p.relative_to(run.output)) for p in run.output.rglob("*.safetensors"))
    checkpoints = sorted(p.name for p in (run.output / "checkpoints").iterdir() if p.is_dir())
    assert checkpoints == ["checkpoint-3", "checkpoint-6"]
    assert weights == [
        "checkpoints/checkpoint-3/model.safetensors",
        "checkpoints/checkpoint-6/model.safetensors",
        "model.safetensors",
    ]
    # Per rank only what a resume needs of each process: its random number generators' state.
    per_rank = sorted(p.name for p in (run.output / "checkpoints" / "checkpoint-6").glob("*_[0-9]*.*"))
    assert per_rank == ["rng_state_0.pth", "rng_state_1.pth"]
    assert json.loads((run.output / "metrics.json").read_text())["global_step"] == STEPS


def test_the_losses_are_those_of_one_process(run: Run) -> None:
    metrics = json.loads((run.output / "metrics.json").read_text())
    # An untrained 2-label classifier is no better than a coin: ln 2. Two ranks once made every loss double.
    assert math.isclose(metrics["eval_loss_before"], math.log(2), rel_tol=0.05), metrics["eval_loss_before"]
    # Six small steps hardly move it; a doubled loss (1.39) would be far out.
    for key in ("train_loss", "eval_loss"):
        assert math.isclose(metrics[key], math.log(2), rel_tol=0.25), (key, metrics[key])
    # One number in every sink: the status, rank 0's termination message and metrics.json.
    final = json.loads(run.termination(0).message)["metrics"]["eval_loss"]
    assert final == metrics["eval_loss"]
    assert run.status["progress"]["evalLoss"] == pytest.approx(final, abs=1e-6)


def rank_view(log: str, rank: int) -> str:
    """What `ftjob logs --rank RANK` promises of its pod's log: all but the lines marked as another rank's."""
    kept = [line for line in log.splitlines(keepends=True) if (m := MARK.match(line)) is None or int(m[1]) == rank]
    return "".join(kept)


def test_ftjob_logs_shows_rank_0_by_default_and_rank_1_with_rank_1(run: Run) -> None:
    default, rank_1 = ftjob(run, "logs", NAME), ftjob(run, "logs", NAME, "--rank", "1")
    assert default.returncode == 0 and rank_1.returncode == 0, (default.stderr, rank_1.stderr)

    node_of_rank_1 = 1 // run.per_node
    assert default.stdout == rank_view(run.logs[0], 0)
    assert rank_1.stdout == rank_view(run.logs[node_of_rank_1], 1)
    # Each view holds lines its own process marked, and none the other one did (torch marks its C++
    # warnings, such as DDP's on the first step, with the rank).
    for rank, view in ((0, default.stdout), (1, rank_1.stdout)):
        marks = {int(m[1]) for line in view.splitlines() if (m := MARK.match(line))}
        assert marks == {rank}, (rank, marks, view[-3000:])
    assert DONE in default.stdout
    if run.per_node == 1:
        assert DONE not in rank_1.stdout  # rank 1's own pod: it writes no results
        assert default.stderr == rank_1.stderr == ""
    else:
        shared = next(line for line in rank_1.stderr.splitlines() if "ranks 0-1 write to one log" in line)
        assert run.pods[0].metadata.name in shared

    beyond = ftjob(run, "logs", NAME, "--rank", "2")
    assert beyond.returncode == 2
    assert "rank 2 is not one of this job's ranks 0-1" in beyond.stderr, beyond.stderr


def test_two_multi_rank_jobs_at_once_each_meet_at_their_own_rendezvous(cluster: Cluster, team: str) -> None:
    # On a cluster each rank-0 pod has its own IP and both listen on 29500; in the sandbox every pod is
    # 127.0.0.1, so the kubelet gives each job's rendezvous a port of its own (kubelet/env.py sandbox_env).
    # Without it the second job's ranks met the first job's store and were restarted until it finished.
    names = ("pair-a", "pair-b")
    for name in names:
        cluster.apply(
            finetunejob(name, team, resources=SHAPES["2-nodes-x-1-process"], hyperparameters={"maxSteps": 30})
        )
    for name in names:
        status = cluster.wait_phase(team, name, "Succeeded", "Failed", timeout=300)
        assert status["phase"] == "Succeeded", status
        assert status["retries"] == 0 and not status.get("restarts"), status
