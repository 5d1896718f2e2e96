"""The real operator process, in the sandbox, driven through kubectl: a FineTuneJob's whole life."""

from __future__ import annotations

import json

import pytest
from finetune_sandbox.cluster import wait_for
from sandbox_support import Cluster, finetunejob, write_sentiment_csv

pytestmark = pytest.mark.e2e


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def test_job_runs_to_success_with_children_adopted_and_events(cluster: Cluster, team: str) -> None:
    cluster.apply(finetunejob("sentiment", team))

    status = cluster.wait_phase(team, "sentiment", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status
    assert condition(status, "Succeeded")["status"] == "True"
    assert condition(status, "Failed")["status"] == "False"
    assert status["startTime"] <= status["completionTime"]
    assert status["jobName"] == "sentiment"

    ftj = cluster.ftj(team, "sentiment")
    owner = {"kind": "FineTuneJob", "name": "sentiment", "uid": ftj["metadata"]["uid"]}
    job = cluster.batch.read_namespaced_job("sentiment", team)
    assert job.spec.completion_mode == "Indexed" and job.spec.completions == 1
    for child in (
        job,
        cluster.core.read_namespaced_config_map("sentiment-config", team),
        cluster.core.read_namespaced_service("sentiment", team),
    ):
        refs = [{"kind": r.kind, "name": r.name, "uid": r.uid} for r in child.metadata.owner_references]
        assert owner in refs

    # The trainer really trained and wrote its outputs where the spec said.
    output = cluster.pvc_dir(team, "models") / "out-sentiment"
    assert (output / "metrics.json").exists()

    reasons = {e.reason for e in cluster.events(team, "sentiment")}
    assert {"Completed"} <= reasons, reasons

    table = cluster.kubectl("get", "ftj", "-n", team).stdout
    header = table.splitlines()[0].split()
    assert header[:4] == ["NAME", "PHASE", "PROGRESS", "STEP"]
    assert "Succeeded" in table


def test_trainer_rejecting_its_data_fails_once_with_invalid_data(cluster: Cluster, team: str) -> None:
    write_sentiment_csv(cluster.pvc_dir(team, "datasets") / "broken" / "train.csv", label_column="stars")
    cluster.apply(finetunejob("broken-data", team, dataset={"train": "pvc://datasets/broken/train.csv"}))

    status = cluster.wait_phase(team, "broken-data", "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Failed"
    assert status["reason"] == "InvalidData"
    assert "label" in status["message"]
    # Retrying cannot fix bad data: the Job's podFailurePolicy failed it on the first exit.
    assert status["retries"] == 1
    assert len(cluster.pods(team, "broken-data")) == 1


def test_unschedulable_job_says_why_then_fails_at_the_startup_deadline(cluster: Cluster, team: str) -> None:
    cluster.apply(finetunejob("too-big", team, resources={"gpusPerNode": 8}, runPolicy={"startupDeadlineSeconds": 8}))

    def explained() -> dict | None:
        status = cluster.status(team, "too-big")
        return status if status.get("reason") == "Unschedulable" else None

    status = wait_for(explained, 60, message="an Unschedulable explanation")
    assert status["phase"] == "Starting"
    assert "Insufficient nvidia.com/gpu" in status["message"]

    failed = cluster.wait_phase(team, "too-big", "Failed", timeout=60)
    assert failed["reason"] == "Unschedulable"
    assert "startupDeadlineSeconds" in failed["message"]
    wait_for(lambda: not cluster.pods(team, "too-big"), 30, message="the pending pod to be released")


def test_queued_job_waits_for_kueue_admission(cluster: Cluster, team: str) -> None:
    cluster.apply(finetunejob("queued", team, scheduling={"queueName": "team-a-queue"}))

    status = cluster.wait_phase(team, "queued", "Queued", timeout=60)
    assert "team-a-queue" in status["message"]
    job = cluster.batch.read_namespaced_job("queued", team)
    assert job.spec.suspend is True
    assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-a-queue"
    assert cluster.pods(team, "queued") == []

    # Kueue admits a workload by unsuspending its Job.
    cluster.batch.patch_namespaced_job("queued", team, {"spec": {"suspend": False}})
    status = cluster.wait_phase(team, "queued", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded"
    assert condition(status, "Admitted")["reason"] == "AdmittedByQueue"


def test_suspend_releases_pods_and_resume_finishes(cluster: Cluster, team: str) -> None:
    cluster.apply(finetunejob("pausable", team, hyperparameters={"maxSteps": 400}))
    cluster.wait_phase(team, "pausable", "Running", timeout=120)

    cluster.kubectl(
        "patch",
        "ftj",
        "pausable",
        "-n",
        team,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"runPolicy": {"suspend": True}}}),
    )
    status = cluster.wait_phase(team, "pausable", "Suspended", timeout=60)
    assert condition(status, "Suspended")["status"] == "True"
    wait_for(
        lambda: not [p for p in cluster.pods(team, "pausable") if p.status.phase in ("Pending", "Running")],
        60,
        message="running pods to be released",
    )

    cluster.kubectl(
        "patch",
        "ftj",
        "pausable",
        "-n",
        team,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"runPolicy": {"suspend": False}}}),
    )
    status = cluster.wait_phase(team, "pausable", "Starting", "Running", timeout=60)
    assert condition(status, "Suspended")["status"] == "False"
    cluster.kubectl("delete", "ftj", "pausable", "-n", team, "--wait=false")


def test_deleting_the_finetunejob_deletes_its_children(cluster: Cluster, team: str) -> None:
    cluster.apply(finetunejob("short-lived", team, hyperparameters={"maxSteps": 400}))
    cluster.wait_phase(team, "short-lived", "Running", timeout=120)

    cluster.kubectl("delete", "ftj", "short-lived", "-n", team)

    def gone() -> bool:
        jobs = cluster.batch.list_namespaced_job(team).items
        maps = [
            c for c in cluster.core.list_namespaced_config_map(team).items if c.metadata.name.startswith("short-lived")
        ]
        return not jobs and not maps and not cluster.pods(team, "short-lived")

    wait_for(gone, 60, message="the Job, ConfigMap and pods to be garbage-collected")


def test_spec_changes_after_creation_are_refused_with_a_warning(cluster: Cluster, team: str) -> None:
    cluster.apply(finetunejob("frozen", team, runPolicy={"suspend": True}))
    cluster.wait_phase(team, "frozen", "Suspended", timeout=60)

    cluster.kubectl(
        "patch",
        "ftj",
        "frozen",
        "-n",
        team,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"hyperparameters": {"learningRate": 0.5}}}),
    )

    def warned() -> bool:
        return any(e.reason == "SpecChangeIgnored" for e in cluster.events(team, "frozen"))

    wait_for(warned, 30, message="a SpecChangeIgnored event")
    job = cluster.core.read_namespaced_config_map("frozen-config", team)
    assert json.loads(job.data["config.json"])["learning_rate"] == pytest.approx(1.0e-3)


def test_operator_killed_right_after_apply_resumes_without_duplicates(cluster: Cluster, team: str) -> None:
    cluster.apply(finetunejob("survivor", team, hyperparameters={"maxSteps": 20}))
    # No grace: the operator may be mid-create. Its replacement must converge, not duplicate.
    cluster.sandbox.operator.kill()
    cluster.sandbox.operator.wait()
    cluster.sandbox.start_operator()

    status = cluster.wait_phase(team, "survivor", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status
    assert [j.metadata.name for j in cluster.batch.list_namespaced_job(team).items] == ["survivor"]
    assert [
        c.metadata.name
        for c in cluster.core.list_namespaced_config_map(team).items
        if c.metadata.name.startswith("survivor")
    ] == ["survivor-config"]
    assert len(cluster.pods(team, "survivor")) == 1


def test_finished_job_is_deleted_after_its_ttl(cluster: Cluster, team: str) -> None:
    write_sentiment_csv(cluster.pvc_dir(team, "datasets") / "broken" / "train.csv", label_column="stars")
    cluster.apply(
        finetunejob(
            "ephemeral",
            team,
            dataset={"train": "pvc://datasets/broken/train.csv"},
            runPolicy={"ttlSecondsAfterFinished": 2},
        )
    )
    cluster.wait_phase(team, "ephemeral", "Failed", timeout=180)
    wait_for(lambda: cluster.ftj(team, "ephemeral") is None, 60, message="the FineTuneJob to be deleted after its TTL")
    wait_for(lambda: not cluster.batch.list_namespaced_job(team).items, 60, message="its Job to be garbage-collected")
