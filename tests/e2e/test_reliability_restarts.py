"""Fault injection through the sandbox, part 1: the operator SIGKILLed at random points during a run of
several jobs, a running trainer pod deleted, and a preemption (DisruptionTarget). Every job must end
Succeeded with exactly one set of children, consistent statuses, and at most one checkpoint interval of
training redone after losing its pod (docs/reliability-tests.md)."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
from finetune_sandbox.cluster import wait_for
from sandbox_support import Cluster, finetunejob, kill_operator, restart_operator

pytestmark = pytest.mark.e2e

SEED = 20261128
KILLS = 8
CHECKPOINT_STEPS = 10
# Steps of a job that must still be running when it is disrupted, a checkpoint already reported: long
# enough (~10 s of tiny-BERT steps) that a loaded machine cannot finish it before the disruption lands.
LONG_RUN_STEPS = 1200
LONG_CHECKPOINT_STEPS = 50
# The line the trainer logs when SIGTERM stopped it after saving (finetune_trainer.run).
STOPPED_AT = re.compile(r"stopped at step (\d+) after saving a checkpoint")


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def assert_succeeded_consistently(cluster: Cluster, namespace: str, name: str, max_steps: int) -> dict[str, Any]:
    """Phase, conditions, times and progress agree with a finished run (the final report may land late)."""

    def final() -> dict[str, Any] | None:
        status = cluster.status(namespace, name)
        return status if (status.get("progress") or {}).get("step") == max_steps else None

    try:
        status = wait_for(final, 30, message=f"{name}'s final progress in its status")
    except TimeoutError:
        raise AssertionError(
            f"{name}: status.progress never reached step {max_steps}: "
            f"{json.dumps(cluster.status(namespace, name), indent=1)}\n"
            f"{cluster.operator_log_tail()}"
        ) from None
    assert status["phase"] == "Succeeded", status
    assert condition(status, "Succeeded")["status"] == "True", status
    assert condition(status, "Failed")["status"] == "False", status
    assert condition(status, "Running")["status"] == "False", status
    assert status["startTime"] <= status["completionTime"], status
    assert status["progress"]["percent"] == 100 and status["progress"]["totalSteps"] == max_steps, status
    assert not status.get("failure"), status
    return status


def children(cluster: Cluster, namespace: str) -> dict[str, list[str]]:
    """Names of every operator-made child in the namespace, by kind (duplicates would show twice)."""
    selector = "app.kubernetes.io/managed-by=finetune-operator"
    return {
        "Job": sorted(
            j.metadata.name for j in cluster.batch.list_namespaced_job(namespace, label_selector=selector).items
        ),
        "ConfigMap": sorted(
            c.metadata.name for c in cluster.core.list_namespaced_config_map(namespace, label_selector=selector).items
        ),
        "Service": sorted(
            s.metadata.name for s in cluster.core.list_namespaced_service(namespace, label_selector=selector).items
        ),
        "Secret": sorted(
            s.metadata.name for s in cluster.core.list_namespaced_secret(namespace, label_selector=selector).items
        ),
    }


def assert_pods_belong_to_their_jobs(cluster: Cluster, namespace: str) -> None:
    """No orphans: every pod is owned by the live Job of its FineTuneJob, and none is still running."""
    jobs = {j.metadata.name: j.metadata.uid for j in cluster.batch.list_namespaced_job(namespace).items}
    for pod in cluster.core.list_namespaced_pod(namespace).items:
        owners = {(ref.kind, ref.name, ref.uid) for ref in pod.metadata.owner_references or []}
        job_name = (pod.metadata.labels or {}).get("finetune.dev/job-name")
        assert ("Job", job_name, jobs.get(job_name)) in owners, f"pod {pod.metadata.name} is orphaned: {owners}"
        assert pod.status.phase in ("Succeeded", "Failed"), f"pod {pod.metadata.name} still {pod.status.phase}"


def test_operator_killed_at_random_points_leaves_every_job_succeeded_once(cluster: Cluster, team: str) -> None:
    rng = random.Random(SEED)
    names = [f"restart-{i}" for i in range(4)]
    steps = {name: rng.choice((20, 30, 40)) for name in names}
    for name in names:
        cluster.apply(
            finetunejob(
                name,
                team,
                hyperparameters={"maxSteps": steps[name], "batchSize": 4},
                output={"checkpointSteps": CHECKPOINT_STEPS},
            )
        )

    # SIGKILL at random moments after each (re)start has begun watching: mid-create, mid-status-write,
    # mid-resume. The jobs' pods keep running meanwhile, as they would while a real operator pod restarts.
    delays = [rng.uniform(0.2, 3.0) for _ in range(KILLS)]
    try:
        for delay in delays:
            time.sleep(delay)
            kill_operator(cluster)
            restart_operator(cluster)
    finally:
        if cluster.sandbox.operator is None:
            cluster.sandbox.start_operator()

    for name in names:
        cluster.wait_phase(team, name, "Succeeded", "Failed", timeout=240)
    for name in names:
        status = assert_succeeded_consistently(cluster, team, name, steps[name])
        assert status["retries"] == 0, f"{name} was retried although only the operator was killed: {status}"
    assert children(cluster, team) == {
        "Job": sorted(names),
        "ConfigMap": sorted(f"{n}-config" for n in names),
        "Service": sorted(names),
        "Secret": sorted(f"{n}-progress" for n in names),
    }
    assert_pods_belong_to_their_jobs(cluster, team)
    # Operator restarts never touch running trainers: each job ran in exactly one pod.
    for name in names:
        assert len(cluster.pods(team, name)) == 1, [p.metadata.name for p in cluster.pods(team, name)]


# -- losing a running trainer pod ---------------------------------------------------------------------


def wait_for_reported_checkpoint(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """A running job whose status already names a complete checkpoint (so there is something to lose)."""

    def checkpointed() -> dict[str, Any] | None:
        status = cluster.status(namespace, name)
        if status.get("phase") in ("Succeeded", "Failed"):
            raise AssertionError(f"{name} finished before it could be disrupted; raise its maxSteps: {status}")
        return status if status.get("phase") == "Running" and status.get("checkpoint") else None

    return wait_for(checkpointed, 180, interval=0.1, message=f"{name} to report a checkpoint while running")


def running_pod(cluster: Cluster, namespace: str, name: str) -> str:
    pods = [p.metadata.name for p in cluster.pods(namespace, name) if p.status.phase == "Running"]
    assert len(pods) == 1, pods
    return pods[0]


def stopped_at_step(cluster: Cluster, namespace: str, pod: str) -> int:
    """The step at which SIGTERM stopped the pod's trainer, from its log (the sandbox keeps it)."""
    log_file = cluster.sandbox.data_dir / "pods" / namespace / pod / "trainer.log"
    wait_for(
        lambda: STOPPED_AT.search(log_file.read_text(errors="replace")) if log_file.exists() else None,
        60,
        message=f"{pod}'s trainer to stop after saving a checkpoint",
    )
    return int(STOPPED_AT.search(log_file.read_text(errors="replace")).group(1))


def trainer_metrics(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    path: Path = cluster.pvc_dir(namespace, "models") / f"out-{name}" / "metrics.json"
    return json.loads(path.read_text())


def assert_resumed_within_one_interval(
    cluster: Cluster, namespace: str, name: str, before: dict[str, Any], stopped: int
) -> dict[str, Any]:
    metrics = trainer_metrics(cluster, namespace, name)
    resumed = metrics["resumed_from_step"]
    reported = before["checkpoint"]["step"]
    # Never behind the checkpoint the status already promised, and at most one interval behind the
    # step the first attempt reached (the SIGTERM save makes it zero).
    assert resumed is not None and resumed >= reported, (resumed, before)
    assert 0 <= stopped - resumed <= LONG_CHECKPOINT_STEPS, (stopped, resumed)
    assert resumed >= before["progress"]["step"] - LONG_CHECKPOINT_STEPS, (resumed, before)
    assert metrics["global_step"] == LONG_RUN_STEPS
    return metrics


def long_job(name: str, namespace: str, **overrides: Any) -> dict[str, Any]:
    return finetunejob(
        name,
        namespace,
        hyperparameters={"maxSteps": LONG_RUN_STEPS, "batchSize": 4},
        output={"checkpointSteps": LONG_CHECKPOINT_STEPS},
        **overrides,
    )


def test_deleted_trainer_pod_resumes_from_its_checkpoint(cluster: Cluster, team: str) -> None:
    cluster.apply(long_job("pod-deleted", team))
    before = wait_for_reported_checkpoint(cluster, team, "pod-deleted")
    pod = running_pod(cluster, team, "pod-deleted")

    cluster.kubectl("delete", "pod", pod, "-n", team, "--wait=false")
    stopped = stopped_at_step(cluster, team, pod)

    status = cluster.wait_phase(team, "pod-deleted", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status
    assert_resumed_within_one_interval(cluster, team, "pod-deleted", before, stopped)
    assert_succeeded_consistently(cluster, team, "pod-deleted", LONG_RUN_STEPS)
    # A plain delete is not a disruption: the Job counts it against backoffLimit, as Kubernetes does.
    assert cluster.status(team, "pod-deleted")["retries"] == 1
    assert [p.metadata.name != pod for p in cluster.pods(team, "pod-deleted")] == [True]


def test_preempted_trainer_resumes_without_consuming_backoff_limit(cluster: Cluster, team: str) -> None:
    # backoffLimit 0: a preemption that counted as a failure would fail the job at once.
    cluster.apply(long_job("preempted", team, runPolicy={"backoffLimit": 0, "startupDeadlineSeconds": 600}))
    before = wait_for_reported_checkpoint(cluster, team, "preempted")
    pod = running_pod(cluster, team, "preempted")

    cluster.runner.call(cluster.sandbox.kubelet.disrupt(team, pod))
    stopped = stopped_at_step(cluster, team, pod)

    status = cluster.wait_phase(team, "preempted", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status
    assert_resumed_within_one_interval(cluster, team, "preempted", before, stopped)
    status = assert_succeeded_consistently(cluster, team, "preempted", LONG_RUN_STEPS)
    assert status["retries"] == 0, status
    job = cluster.batch.read_namespaced_job("preempted", team)
    assert (job.status.failed or 0) == 0, job.status
    assert [p.metadata.name != pod for p in cluster.pods(team, "preempted")] == [True]
