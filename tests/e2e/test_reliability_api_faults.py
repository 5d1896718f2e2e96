"""Fault injection through the sandbox, part 2: the API server fails the operator's own calls (409
conflicts, 429 throttling, 500s and dropped connections on status writes, child creates, Kopf's
patches and its watch requests). Jobs must still converge to Succeeded with exactly one set of
children. A dedicated sandbox, so the faults and the short watch timeouts touch no other test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from finetune_sandbox.apiserver.faults import FaultRule
from finetune_sandbox.cluster import Sandbox, SandboxThread, wait_for
from sandbox_support import Cluster, finetunejob, write_sentiment_csv
from test_reliability_restarts import assert_pods_belong_to_their_jobs, assert_succeeded_consistently, children

pytestmark = pytest.mark.e2e

# Kopf's watch requests carry this server timeout (FINETUNE_WATCH_SERVER_TIMEOUT); the sandbox's own
# controllers ask for 60 s, so a rule matching it hits the operator alone. Short, so Kopf reconnects
# (and meets the injected faults) several times within a test.
WATCH_SERVER_TIMEOUT = 4
# Each create above fails at most 4 times in a row: with a 1-2-4-8 s backoff that is 15 s of retries.
CREATE_WITHIN_SECONDS = 30


@pytest.fixture(scope="module")
def faulty_cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    sandbox = Sandbox(
        tmp_path_factory.mktemp("faulty-sandbox"),
        operator_env={
            "FINETUNE_WATCH_SERVER_TIMEOUT": str(WATCH_SERVER_TIMEOUT),
            "FINETUNE_WATCH_CLIENT_TIMEOUT": str(WATCH_SERVER_TIMEOUT + 6),
        },
    )
    runner = SandboxThread(sandbox)
    runner.start()
    try:
        yield Cluster(sandbox, runner)
    finally:
        sandbox.server.faults.clear()
        runner.stop()


@pytest.fixture()
def faulty_team(faulty_cluster: Cluster, tiny_model_source: Path) -> str:
    namespace = faulty_cluster.namespace()
    shutil.copytree(tiny_model_source, faulty_cluster.pvc_dir(namespace, "models") / "tiny-bert")
    write_sentiment_csv(faulty_cluster.pvc_dir(namespace, "datasets") / "sentiment" / "train.csv")
    return namespace


def inject(cluster: Cluster, method: str, path_regex: str, statuses: list[int], times: int) -> list[FaultRule]:
    """One rule per status, consumed in order: `times` failures of each, then the calls go through."""
    return [
        cluster.sandbox.server.faults.add(
            method=method,
            path_regex=path_regex,
            status=status,
            times=times,
            message=f"injected {status or 'dropped connection'}",
        )
        for status in statuses
    ]


def assert_all_hit(rules: list[FaultRule]) -> None:
    """Every injected fault really happened: otherwise the test proved nothing about it."""
    missed = [(r.method, r.path_regex.pattern, r.status, f"{r.hits}/{r.times}") for r in rules if r.hits != r.times]
    assert not missed, f"faults never reached by the operator: {missed}"


def test_jobs_converge_through_conflicts_throttling_errors_and_dropped_connections(
    faulty_cluster: Cluster,
    faulty_team: str,
) -> None:
    cluster, ns = faulty_cluster, faulty_team
    names = ["flaky-a", "flaky-b"]
    api = f"/apis/finetune.dev/v1alpha1/namespaces/{ns}/finetunejobs"
    rules = [
        # Status writes (reconcile and progress paths) of one job: conflict, throttling, error, dropped.
        *inject(cluster, "PATCH", rf"^{api}/flaky-a/status", [409, 429, 500, 0], times=2),
        # The other's first status writes: an error, then a dropped connection (each retried by a fresh read).
        *inject(cluster, "PATCH", rf"^{api}/flaky-b/status", [500, 0], times=1),
        # Child creation: the training Job and a ConfigMap fail before they exist.
        *inject(cluster, "POST", rf"^/apis/batch/v1/namespaces/{ns}/jobs(\?|$)", [500, 429, 0, 409], times=1),
        *inject(cluster, "POST", rf"^/api/v1/namespaces/{ns}/configmaps(\?|$)", [500, 0], times=1),
    ]
    for name in names:
        cluster.apply(
            finetunejob(name, ns, hyperparameters={"maxSteps": 20, "batchSize": 4}, output={"checkpointSteps": 5})
        )
    # Failed calls are retried within seconds (not after Kopf's default minute).
    wait_for(
        lambda: len(cluster.batch.list_namespaced_job(ns).items) == len(names),
        CREATE_WITHIN_SECONDS,
        message="both training Jobs to be created despite the failed calls",
    )

    # Kopf's watch reconnections while the jobs run: refused with 500/429, or dropped.
    rules += inject(cluster, "GET", rf"watch=true.*timeoutSeconds={WATCH_SERVER_TIMEOUT}(&|$)", [500, 429, 0], times=2)
    for name in names:
        status = cluster.wait_phase(ns, name, "Succeeded", "Failed", timeout=240)
        assert status["phase"] == "Succeeded", status
    for name in names:
        status = assert_succeeded_consistently(cluster, ns, name, 20)
        assert status["retries"] == 0, status
    assert_all_hit(rules)
    assert children(cluster, ns) == {
        "Job": names,
        "ConfigMap": [f"{n}-config" for n in names],
        "Service": names,
        "Secret": [f"{n}-progress" for n in names],
    }
    assert_pods_belong_to_their_jobs(cluster, ns)
    for name in names:
        assert len(cluster.pods(ns, name)) == 1
    assert cluster.sandbox.operator.poll() is None, f"the operator exited:\n{cluster.operator_log_tail()}"
