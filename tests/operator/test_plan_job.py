"""plan_job: what one reconcile of a plain FineTuneJob decides, from what it observed (pure, no API).

Tables of cases: every phase the children can show, every class of failure, and what the plan asks
for at each (children, suspension, deletions, status, events, metrics, record changes).
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from finetune_operator import reasons as r
from finetune_operator.builders import spec_hash
from finetune_operator.config import OperatorConfig
from finetune_operator.names import ANNOTATION_SPEC_HASH, PROGRESS_TOKEN_KEY
from finetune_operator.progress.records import JobRecord
from finetune_operator.reconcile.job import JobObservation, plan_job
from finetune_operator.spec import InvalidSpec, parse_spec
from finetune_operator.status import Observed

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
CREATED = NOW - timedelta(minutes=5)
CONFIG = OperatorConfig.from_env()
SPEC_BODY: dict[str, Any] = {
    "task": "text-classification",
    "model": {"source": "pvc://models/minilm"},
    "dataset": {"train": "pvc://data/train.csv"},
    "output": {"uri": "pvc://models/out"},
    "resources": {"nodes": 2, "gpusPerNode": 4},
    "hyperparameters": {"learningRate": 0.00002},
}


def ftj(status: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.example.com/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {
            "name": "ft",
            "namespace": "ns",
            "uid": "uid-1",
            "generation": generation,
            "creationTimestamp": CREATED.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {**SPEC_BODY, **spec},
        "status": status or {},
    }


def job(*conditions: str, suspend: bool = False, annotations: dict[str, str] | None = None, **status: Any):
    return {
        "metadata": {"name": "ft", "namespace": "ns", "annotations": annotations or {}},
        "spec": {"suspend": suspend},
        "status": {"conditions": [{"type": c, "status": "True", "reason": c} for c in conditions], **status},
    }


def pod(name: str, phase: str = "Running", *, terminated: dict[str, Any] | None = None, **status: Any):
    state = {"terminated": terminated} if terminated else {"running": {"startedAt": "x"}}
    if phase == "Pending":
        state = {"waiting": {"reason": "ContainerCreating"}}
    return {
        "metadata": {"name": name},
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}], **status},
    }


RUNNING_PODS = [pod("ft-0"), pod("ft-1")]
# One pod: the Job controller retries it and counts the retries (several: gang restarts, test_gang_restart.py).
ONE_NODE = {"nodes": 1, "gpusPerNode": 4}


def plan(body, children=None, record=None, now=NOW, **record_fields):
    children = children or Observed()
    record = record or JobRecord("ns", "ft", uid="uid-1", created=CREATED, gpus=8, children_complete=True)
    record.update(**record_fields)
    try:
        spec, error = parse_spec(body["spec"], "ft"), None
    except InvalidSpec as exc:
        spec, error = None, str(exc)
    observation = JobObservation(ftj=body, spec=spec, spec_error=error, children=children, token="t0k3n")
    return plan_job(observation, record, config=CONFIG, now=now)


def written(body: dict[str, Any], result) -> dict[str, Any]:
    """The FineTuneJob as the plan's status write leaves it (a JSON merge patch of the status)."""
    return {**body, "status": {**body["status"], **result.status}}


# --- children ------------------------------------------------------------------------------------


def test_a_new_job_sends_its_four_children_in_dependency_order_and_is_starting_at_once():
    result = plan(ftj(), record=JobRecord("ns", "ft", uid="uid-1", created=CREATED, gpus=8))
    [children] = result.create
    # What the Job's pods mount (ConfigMap, Secret) and resolve (Service) before the Job itself.
    assert [c["kind"] for c in children] == ["ConfigMap", "Secret", "Service", "Job"]
    assert all(c["metadata"]["ownerReferences"][0]["uid"] == "uid-1" for c in children)
    assert base64.b64decode(children[1]["data"][PROGRESS_TOKEN_KEY]) == b"t0k3n"
    assert result.remember["ft"]["children_complete"] is True
    # Derived from the Job about to be sent: Starting in the same write, with its event.
    assert result.status["phase"] == r.STARTING
    assert [e.reason for e in result.events] == [r.POD_PENDING]


def test_a_restarted_operator_resends_the_children_of_a_job_it_did_not_create_itself():
    result = plan(ftj({"phase": r.RUNNING}), Observed(job(active=2), RUNNING_PODS), children_complete=False)
    assert [c["kind"] for c in result.create[0]] == ["ConfigMap", "Secret", "Service", "Job"]


def test_children_already_sent_are_not_sent_again():
    result = plan(ftj({"phase": r.RUNNING}), Observed(job(active=2), RUNNING_PODS))
    assert result.create == []


def test_a_finished_job_gets_no_children_even_when_its_job_is_gone():
    result = plan(ftj({"phase": r.SUCCEEDED}), Observed(), children_complete=False)
    assert result.create == [] and result.suspend == []


@pytest.mark.parametrize(
    ("run_policy", "scheduling", "job_suspended", "expected"),
    [
        ({"suspend": True}, {}, False, [("ft", True)]),
        ({"suspend": False}, {}, True, [("ft", False)]),
        ({"suspend": False}, {"queueName": "team-a"}, True, []),  # unsuspending a queued Job is Kueue's
        ({"suspend": True}, {"queueName": "team-a"}, False, [("ft", True)]),
        ({"suspend": False}, {}, False, []),
    ],
)
def test_the_jobs_suspension_follows_the_spec(run_policy, scheduling, job_suspended, expected):
    body = ftj({"phase": r.RUNNING}, runPolicy=run_policy, scheduling=scheduling)
    assert plan(body, Observed(job(suspend=job_suspended), RUNNING_PODS)).suspend == expected


def test_a_spec_change_after_creation_is_warned_of_once_naming_the_fields():
    record = JobRecord("ns", "ft", uid="uid-1", created=CREATED, gpus=8, children_complete=True)
    built = Observed(job(annotations={ANNOTATION_SPEC_HASH: spec_hash(parse_spec(SPEC_BODY))}), RUNNING_PODS)
    first = plan(ftj({"phase": r.RUNNING}), built, record=record)
    record.update(**first.remember["ft"])
    assert not [e for e in first.events if e.reason == r.SPEC_CHANGE_IGNORED]  # the spec the Job was built from
    edited = ftj({"phase": r.RUNNING}, generation=2, hyperparameters={"learningRate": 0.1, "maxSteps": 100})
    second = plan(edited, built, record=record)
    [warning] = [e for e in second.events if e.reason == r.SPEC_CHANGE_IGNORED]
    assert warning.type == "Warning" and "hyperparameters.learningRate" in warning.message
    record.update(**second.remember["ft"])
    again = plan(edited, built, record=record)
    assert not [e for e in again.events if e.reason == r.SPEC_CHANGE_IGNORED]


# --- phases --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("children", "phase", "reason"),
    [
        (Observed(job(active=2), [pod("ft-0"), pod("ft-1", "Pending")]), r.STARTING, r.POD_PENDING),
        (Observed(job(active=2), RUNNING_PODS), r.RUNNING, r.PODS_RUNNING),
        (Observed(job(suspend=True)), r.SUSPENDED, None),
        (Observed(job("Complete", succeeded=2)), r.SUCCEEDED, None),
        (Observed(job("Failed"), [pod("ft-0", "Failed", terminated={"exitCode": 1})]), r.FAILED, r.TRAINER_CRASHED),
    ],
)
def test_each_phase_the_children_show_is_written_with_its_event(children, phase, reason):
    # backoffLimit 0: the failed gang is not restarted (gang restarts: test_gang_restart.py)
    body = ftj({"phase": r.PENDING}, runPolicy={"suspend": phase == r.SUSPENDED, "backoffLimit": 0})
    result = plan(body, children)
    assert result.status["phase"] == phase
    if reason is not None:
        assert result.status["reason"] == reason
    [event] = [e for e in result.events if e.reason in (result.status.get("reason"), phase)]
    assert event.type == ("Warning" if phase == r.FAILED else "Normal")
    assert result.remember["ft"]["phase"] == phase


def test_a_plan_is_idempotent_once_its_status_is_written():
    children = Observed(job(active=2), RUNNING_PODS)
    first = plan(ftj({"phase": r.STARTING}), children, children_complete=True)
    record = JobRecord("ns", "ft", uid="uid-1", created=CREATED, gpus=8, children_complete=True)
    record.update(**first.remember["ft"])
    again = plan(written(ftj({"phase": r.STARTING}), first), children, record=record)
    assert again.status == {} and again.events == [] and again.create == []
    assert again.metrics.time_to_running is None and again.metrics.failures == []


def test_running_opens_the_gpu_interval_and_observes_time_to_running():
    result = plan(ftj({"phase": r.STARTING}), Observed(job(active=2), RUNNING_PODS))
    assert result.remember["ft"]["running_since"] == NOW
    assert result.metrics.time_to_running == 300.0
    assert result.metrics.gpu_seconds == 0.0


def test_leaving_running_closes_the_gpu_interval_and_asks_the_hub_for_a_progress_write():
    ran = NOW - timedelta(seconds=100)
    result = plan(
        ftj({"phase": r.RUNNING, "startTime": "2026-11-28T11:58:20Z"}),
        Observed(job("Complete", succeeded=2)),
        running_since=ran,
    )
    assert result.metrics.gpu_seconds == pytest.approx(800.0)  # 8 GPUs for 100 s
    assert result.remember["ft"]["running_since"] is None
    assert result.remember["ft"]["gpu_seconds"] == pytest.approx(800.0)
    assert result.write_progress.count("ft") >= 1


def test_a_job_that_ran_to_completion_completes_its_progress_through_the_hub_not_the_status_write():
    stale = {"step": 40, "totalSteps": 100, "percent": 40}
    result = plan(ftj({"phase": r.RUNNING, "progress": stale}), Observed(job("Complete", succeeded=2)))
    assert "progress" not in result.status  # the progress hub is status.progress's one writer
    assert result.remember["ft"]["finished"] is True
    assert result.remember["ft"]["completed_progress"]["step"] == 100
    assert "ft" in result.write_progress


def test_early_stopping_leaves_the_reported_progress_as_it_is():
    body = ftj({"phase": r.RUNNING}, regularization={"earlyStopping": {"patience": 2}})
    result = plan(body, Observed(job("Complete", succeeded=2)))
    assert "finished" not in result.remember["ft"]


# --- failures ------------------------------------------------------------------------------------

FAILED_PODS = [
    ({"exitCode": 1, "message": "Traceback: boom"}, r.TRAINER_CRASHED),
    ({"exitCode": 137, "reason": "OOMKilled"}, r.OUT_OF_MEMORY),
    ({"exitCode": r.EXIT_INVALID_DATA, "message": "column text missing"}, r.INVALID_DATA),
    ({"exitCode": 2, "message": '{"reason": "InvalidData", "message": "no label column"}'}, r.INVALID_DATA),
]


@pytest.mark.parametrize(("terminated", "reason"), FAILED_PODS)
def test_a_failed_trainer_fails_the_job_with_its_class_reads_its_log_once_and_counts_it(terminated, reason):
    children = Observed(job("Failed"), [pod("ft-0", "Failed", terminated={**terminated, "finishedAt": "t"})])
    result = plan(ftj({"phase": r.RUNNING}, resources=ONE_NODE), children)
    assert result.status["phase"] == r.FAILED and result.status["reason"] == reason
    assert result.status["failure"]["pod"] == "ft-0"
    assert result.log_tail == ("failure", "ft-0")
    assert result.metrics.failures == [reason]
    assert [e.type for e in result.events] == ["Warning"]
    # Already Failed: no second log read, count or event.
    again = plan(written(ftj({"phase": r.RUNNING}, resources=ONE_NODE), result), children)
    assert again.log_tail is None and again.metrics.failures == [] and again.events == []


@pytest.mark.parametrize(
    ("pod_status", "reason"),
    [
        ({"reason": "NodeLost"}, r.NODE_LOST),
        (
            {"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]},
            r.PREEMPTED,
        ),
    ],
)
def test_a_job_failed_by_disruptions_names_them(pod_status, reason):
    failed = pod("ft-0", "Failed", terminated={"exitCode": 137}, **pod_status)
    result = plan(ftj({"phase": r.RUNNING}, resources=ONE_NODE), Observed(job("Failed"), [failed]))
    assert result.status["reason"] == reason and result.metrics.failures == [reason]


def test_the_jobs_active_deadline_is_its_failure_reason():
    result = plan(ftj({"phase": r.RUNNING}), Observed(job("Failed")))
    result_deadline = plan(
        ftj({"phase": r.RUNNING}),
        Observed(
            {**job(), "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
        ),
    )
    assert result.status["reason"] == r.TRAINER_CRASHED
    assert result_deadline.status["reason"] == r.DEADLINE_EXCEEDED and result_deadline.log_tail is None


def test_a_job_that_cannot_start_in_time_fails_and_releases_its_job():
    body = ftj({}, runPolicy={"startupDeadlineSeconds": 60})
    pending = Observed(job(active=2), [pod("ft-0", "Pending"), pod("ft-1", "Pending")])
    starting = plan(body, pending, now=CREATED + timedelta(seconds=10))
    assert starting.status["phase"] == r.STARTING and starting.delete_jobs == []
    result = plan(written(body, starting), pending)
    assert result.status["phase"] == r.FAILED and result.status["reason"] == r.STARTUP_DEADLINE_EXCEEDED
    assert result.delete_jobs == ["ft"]
    assert result.metrics.failures == [r.STARTUP_DEADLINE_EXCEEDED]


def test_new_pod_retries_are_counted_once():
    body = ftj({"phase": r.RUNNING, "retries": 1}, resources=ONE_NODE)
    result = plan(body, Observed(job(active=1, failed=3), [pod("ft-0")]))
    assert result.metrics.retries == 2
    assert plan(written(body, result), Observed(job(active=1, failed=3), [pod("ft-0")])).metrics.retries == 0


def test_an_invalid_spec_fails_once_with_its_message():
    body = ftj({}, task="no-such-task")
    result = plan(body, Observed())
    assert result.status["phase"] == r.FAILED and result.status["reason"] == r.INVALID_SPEC
    assert result.create == [] and result.metrics.failures == [r.INVALID_SPEC]
    assert [e.reason for e in result.events] == [r.INVALID_SPEC]
    again = plan(written(body, result), Observed())
    assert again.status == {} and again.events == [] and again.remember == {"ft": {"phase": r.FAILED}}


# --- stalls, queues, TTL -------------------------------------------------------------------------


def test_a_running_job_whose_step_stands_still_is_stalled_once():
    running = ftj({"phase": r.RUNNING, "startTime": "2026-11-28T11:00:00Z"})
    since = NOW - timedelta(seconds=CONFIG.stall_seconds + 1)
    result = plan(running, Observed(job(active=2), RUNNING_PODS), running_since=since)
    assert result.remember["ft"]["stalled"] is True
    assert [e.reason for e in result.events] == [r.NO_PROGRESS]
    stalled_record = JobRecord("ns", "ft", uid="uid-1", created=CREATED, gpus=8, children_complete=True)
    stalled_record.update(**result.remember["ft"])
    again = plan(written(running, result), Observed(job(active=2), RUNNING_PODS), record=stalled_record)
    assert again.events == []


def test_admission_by_kueue_observes_the_queue_wait():
    spec = {"scheduling": {"queueName": "team-a"}}
    queued = plan(ftj({}, **spec), Observed(job(suspend=True)))
    assert queued.status["phase"] == r.QUEUED
    admitted = plan(
        written(ftj({}, **spec), queued),
        Observed(job(active=2), [pod("ft-0", "Pending")]),
        now=NOW + timedelta(seconds=90),
    )
    assert admitted.metrics.queue_wait == pytest.approx(90.0)


def test_a_finished_job_past_its_ttl_is_deleted():
    done = {"phase": r.SUCCEEDED, "completionTime": "2026-11-28T11:00:00Z"}
    body = ftj(done, runPolicy={"ttlSecondsAfterFinished": 60})
    assert plan(body, Observed(job("Complete", succeeded=2))).delete_finetunejob is True
    assert plan(ftj(done), Observed(job("Complete", succeeded=2))).delete_finetunejob is False
