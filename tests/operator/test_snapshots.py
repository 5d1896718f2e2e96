"""What the operator keeps of watched objects (finetune_operator.snapshots): less memory, the same decisions.

The index snapshots drop a Job's pod template, a pod's spec (but its node), managedFields and kubectl's
last-applied annotation. The plan made from snapshots must equal the plan made from the full objects, in
every state a run goes through: that is what makes dropping them safe.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from finetune_operator.builders import build_job
from finetune_operator.config import OperatorConfig
from finetune_operator.progress.records import JobRecord
from finetune_operator.reconcile.job import JobObservation, plan_job
from finetune_operator.snapshots import LAST_APPLIED, child_snapshot, finetunejob_snapshot, strip_unread_metadata
from finetune_operator.spec import parse_spec
from finetune_operator.status import Observed

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)
CREATED = NOW - timedelta(minutes=10)
CONFIG = OperatorConfig.from_env()
SPEC = {
    "task": "text-classification",
    "model": {"source": "pvc://models/minilm"},
    "dataset": {"train": "pvc://data/train.csv"},
    "output": {"uri": "pvc://models/out"},
    "resources": {"nodes": 2, "gpusPerNode": 1},
}
MANAGED_FIELDS = [{"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {}}}]


def finetunejob(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {
            "name": "ft",
            "namespace": "ns",
            "uid": "uid-1",
            "generation": 1,
            "creationTimestamp": CREATED.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "annotations": {LAST_APPLIED: '{"spec": "all of it again"}', "team": "nlp"},
            "managedFields": MANAGED_FIELDS,
        },
        "spec": copy.deepcopy(SPEC),
        "status": status or {"phase": "Starting"},
    }


def training_job(*conditions: str, suspend: bool = False, **status: Any) -> dict[str, Any]:
    """The operator's own Job as the API server returns it: its whole pod template, managedFields, a status."""
    job = build_job(parse_spec(SPEC, "ft"), "ft", "ns", config=CONFIG, config_hash="abc")
    job["spec"]["suspend"] = suspend
    job["metadata"].update(uid="job-uid", managedFields=MANAGED_FIELDS, creationTimestamp="2026-12-07T11:51:00Z")
    job["status"] = {"conditions": [{"type": c, "status": "True", "reason": c} for c in conditions], **status}
    return job


def trainer_pod(job: dict[str, Any], rank: int, phase: str, state: dict[str, Any]) -> dict[str, Any]:
    template = copy.deepcopy(job["spec"]["template"])
    labels = {**template["metadata"]["labels"], "batch.kubernetes.io/job-completion-index": str(rank)}
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "ft", "uid": "job-uid", "controller": True}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"ft-{rank}-x",
            "namespace": "ns",
            "labels": labels,
            "annotations": {"batch.kubernetes.io/job-completion-index": str(rank)},
            "ownerReferences": [owner],
            "managedFields": MANAGED_FIELDS,
            "creationTimestamp": "2026-12-07T11:52:00Z",
        },
        "spec": {**template["spec"], "nodeName": f"gpu-node-{rank}"},
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state, "restartCount": 0}]},
    }


RUNNING = {"running": {"startedAt": "2026-12-07T11:53:00Z"}}
PENDING = {"waiting": {"reason": "ContainerCreating"}}
OOM = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-12-07T11:58:00Z"}}
DONE = {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": "2026-12-07T11:59:00Z"}}


def scenarios() -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    active = training_job(active=2)
    failed = training_job("FailureTarget", "Failed", failed=1)
    complete = training_job("SuccessCriteriaMet", "Complete", succeeded=2)
    suspended = training_job("Suspended", suspend=True)
    return {
        "pending": (active, [trainer_pod(active, 0, "Pending", PENDING), trainer_pod(active, 1, "Pending", PENDING)]),
        "running": (active, [trainer_pod(active, 0, "Running", RUNNING), trainer_pod(active, 1, "Running", RUNNING)]),
        "one rank OOM-killed": (
            failed,
            [trainer_pod(failed, 0, "Running", RUNNING), trainer_pod(failed, 1, "Failed", OOM)],
        ),
        "complete": (complete, [trainer_pod(complete, r, "Succeeded", DONE) for r in (0, 1)]),
        "suspended": (suspended, []),
        "one pod missing": (active, [trainer_pod(active, 0, "Running", RUNNING)]),
    }


def plan(body: dict[str, Any], job: dict[str, Any], pods: list[dict[str, Any]]):
    record = JobRecord("ns", "ft", uid="uid-1", created=CREATED, gpus=2, children_complete=True)
    observation = JobObservation(
        ftj=body, spec=parse_spec(body["spec"], "ft"), spec_error=None, children=Observed(job=job, pods=pods), token="t"
    )
    return plan_job(observation, record, config=CONFIG, now=NOW)


@pytest.mark.parametrize("name", list(scenarios()))
@pytest.mark.parametrize("status", [{"phase": "Starting"}, {"phase": "Running", "startedAt": "2026-12-07T11:53:00Z"}])
def test_the_plan_from_snapshots_is_the_plan_from_full_objects(name: str, status: dict[str, Any]) -> None:
    job, pods = scenarios()[name]
    full = plan(finetunejob(status), job, pods)
    slim = plan(finetunejob_snapshot(finetunejob(status)), child_snapshot(job), [child_snapshot(p) for p in pods])
    assert slim == full


def test_a_child_snapshot_keeps_identity_metadata_status_and_the_two_spec_fields_read() -> None:
    job = training_job(active=1)
    pod = trainer_pod(job, 1, "Failed", OOM)
    job_snapshot, pod_snapshot = child_snapshot(job), child_snapshot(pod)
    assert job_snapshot["spec"] == {"suspend": False}
    assert pod_snapshot["spec"] == {"nodeName": "gpu-node-1"}
    for full, snapshot in ((job, job_snapshot), (pod, pod_snapshot)):
        assert (snapshot["apiVersion"], snapshot["kind"]) == (full["apiVersion"], full["kind"])
        assert snapshot["status"] == full["status"]
        assert snapshot["metadata"] == {k: v for k, v in full["metadata"].items() if k != "managedFields"}


def test_snapshots_are_copies_and_much_smaller() -> None:
    job = training_job(active=1)
    pod = trainer_pod(job, 0, "Running", RUNNING)
    snapshot = child_snapshot(pod)
    pod["status"]["phase"] = "Failed"
    pod["metadata"]["labels"]["changed"] = "yes"
    assert snapshot["status"]["phase"] == "Running" and "changed" not in snapshot["metadata"]["labels"]
    assert len(repr(child_snapshot(job))) * 2 < len(repr(job))
    assert len(repr(snapshot)) * 2 < len(repr(pod))


def test_a_finetunejob_snapshot_drops_only_managed_fields_and_the_last_applied_manifest() -> None:
    body = finetunejob({"phase": "Running", "progress": {"step": 10}})
    snapshot = finetunejob_snapshot(body)
    assert snapshot["spec"] == body["spec"] and snapshot["status"] == body["status"]
    assert "managedFields" not in snapshot["metadata"]
    assert snapshot["metadata"]["annotations"] == {"team": "nlp"}
    assert body["metadata"]["annotations"][LAST_APPLIED]  # the original is untouched
    snapshot["status"]["progress"]["step"] = 11
    assert body["status"]["progress"]["step"] == 10


def test_strip_unread_metadata_works_in_place_on_a_decoded_answer() -> None:
    body = finetunejob()
    assert strip_unread_metadata(body) is body
    assert "managedFields" not in body["metadata"] and LAST_APPLIED not in body["metadata"]["annotations"]
    bare = {"metadata": {"name": "x"}}
    assert strip_unread_metadata(bare) == {"metadata": {"name": "x"}}
