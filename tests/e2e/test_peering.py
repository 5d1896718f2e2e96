"""Two operator replicas with `--peering`: only one acts; when it dies, the other takes over.

A sandbox of its own (the session's cluster already runs a standalone operator that would act too).
Jobs are created suspended so that proving who acted needs no training run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from finetune_operator.names import training_job_name
from finetune_sandbox.cluster import MANIFESTS, Sandbox, SandboxThread, wait_for
from sandbox_support import Cluster, finetunejob

pytestmark = pytest.mark.e2e

PEERING = "finetune-operator"
LIFETIME_SECONDS = 4


@pytest.fixture()
def bare_cluster(tmp_path: Path):
    sandbox = Sandbox(tmp_path / "sandbox", run_operator=False)
    runner = SandboxThread(sandbox)
    runner.start()
    cluster = Cluster(sandbox, runner)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        cluster.kubectl("apply", "-f", str(MANIFESTS / "crd" / "kopf-peering.yaml"))
        yield cluster, processes
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        runner.stop()


def replica(cluster: Cluster, processes: list, log: Path) -> subprocess.Popen[bytes]:
    process = cluster.sandbox.spawn_operator(
        ["--peering", PEERING], log_path=log, env={"FINETUNE_PEERING_LIFETIME_SECONDS": str(LIFETIME_SECONDS)}
    )
    processes.append(process)
    return process


def creations(log: Path) -> int:
    """How many training Jobs this replica created (the operator logs each one)."""
    return log.read_text(errors="replace").count("created training Job ")


def job_names(cluster: Cluster, namespace: str) -> list[str]:
    return sorted(j.metadata.name for j in cluster.batch.list_namespaced_job(namespace).items)


def peers(cluster: Cluster) -> dict:
    body = cluster.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING)
    return body.get("status") or {}


def create_suspended(cluster: Cluster, namespace: str, name: str) -> None:
    cluster.apply(finetunejob(name, namespace, runPolicy={"suspend": True, "startupDeadlineSeconds": 600}))


def test_two_replicas_one_acts_and_the_other_takes_over_when_it_dies(bare_cluster, tmp_path):
    cluster, processes = bare_cluster
    namespace = cluster.namespace()
    log_a, log_b = tmp_path / "operator-a.log", tmp_path / "operator-b.log"

    first = replica(cluster, processes, log_a)
    create_suspended(cluster, namespace, "before")
    cluster.wait_phase(namespace, "before", "Suspended", timeout=60)
    # The peering object was created by the operator itself and holds its keep-alive.
    assert len(peers(cluster)) == 1

    replica(cluster, processes, log_b)
    wait_for(lambda: len(peers(cluster)) == 2, 30, message="the second replica's keep-alive")
    create_suspended(cluster, namespace, "both")
    cluster.wait_phase(namespace, "both", "Suspended", timeout=60)
    # The active replica handled both jobs; the paused one handled nothing at all.
    assert creations(log_a) == 2
    assert creations(log_b) == 0 and "Handler '" not in log_b.read_text()
    assert job_names(cluster, namespace) == [training_job_name("before"), training_job_name("both")]

    os.killpg(first.pid, signal.SIGKILL)  # no goodbye: the survivor must notice the silence
    first.wait()
    create_suspended(cluster, namespace, "after")
    cluster.wait_phase(namespace, "after", "Suspended", timeout=LIFETIME_SECONDS * 10)
    assert "Resuming operations after the pause" in log_b.read_text()
    # The survivor reconciled the jobs it inherited (Kopf lists them to its event handler) and created only
    # the new one's Job.
    assert creations(log_b) == 1
    assert log_b.read_text().count("Handler 'job_event' succeeded") >= 3
    assert job_names(cluster, namespace) == sorted(training_job_name(n) for n in ("before", "both", "after"))
