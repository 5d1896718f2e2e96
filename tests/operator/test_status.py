"""derive_status: what the children show -> phase, conditions and a message that says why."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from finetune_operator import reasons as r
from finetune_operator.conditions import find_condition
from finetune_operator.spec import parse_spec
from finetune_operator.status import (
    Observed,
    derive_status,
    startup_deadline_exceeded,
    startup_failure_status,
    status_changes,
    ttl_expired,
)

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
# One pod: the Job controller retries it and counts the retries (several: gang restarts, test_gang_restart.py).
ONE_NODE = {"nodes": 1, "gpusPerNode": 4}


def make_spec(**overrides):
    body = {
        "task": "text-classification",
        "model": {"source": "pvc://models/minilm"},
        "dataset": {"train": "pvc://data/train.csv"},
        "output": {"uri": "pvc://models/out"},
        "resources": {"nodes": 2, "gpusPerNode": 4},
    }
    body.update(overrides)
    return parse_spec(body)


def job(*, suspend=False, conditions=(), failed=0, **status):
    return {
        "metadata": {"name": "ft", "namespace": "ns"},
        "spec": {"suspend": suspend},
        "status": {
            "conditions": [dict(c, status=c.get("status", "True")) for c in conditions],
            "failed": failed,
            **status,
        },
    }


def pod(name, phase="Running", *, state=None, conditions=(), deleting=False):
    state = (
        state
        if state is not None
        else ({"running": {"startedAt": "x"}} if phase == "Running" else {"waiting": {"reason": "ContainerCreating"}})
    )
    meta = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T11:00:00Z"
    return {
        "metadata": meta,
        "status": {
            "phase": phase,
            "conditions": list(conditions),
            "containerStatuses": [{"name": "trainer", "state": state}],
        },
    }


def derive(spec, observed, previous=None, now=NOW):
    return derive_status(spec, previous or {}, observed, job_name="ft", generation=1, now=now)


def test_absent_job_is_pending_while_children_are_created():
    status = derive(make_spec(), Observed(job=None))
    assert status["phase"] == r.PENDING
    assert find_condition(status["conditions"], r.COND_RUNNING)["status"] == "False"


def test_running_only_when_every_rank_pod_runs():
    spec = make_spec()
    one = derive(spec, Observed(job(active=2), [pod("ft-0"), pod("ft-1", "Pending")]))
    assert one["phase"] == r.STARTING
    assert one["message"] == "1 of 2 trainer pods running"
    both = derive(spec, Observed(job(active=2), [pod("ft-0"), pod("ft-1")]), previous=one)
    assert both["phase"] == r.RUNNING
    assert both["startTime"] == "2026-11-28T12:00:00Z"
    assert find_condition(both["conditions"], r.COND_RUNNING)["status"] == "True"


def test_pod_being_deleted_does_not_count_as_running():
    status = derive(make_spec(), Observed(job(), [pod("ft-0"), pod("ft-1", deleting=True)]))
    assert status["phase"] == r.STARTING


def test_unschedulable_pod_explains_with_the_schedulers_message():
    unscheduled = pod(
        "ft-1",
        "Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    status = derive(make_spec(), Observed(job(), [pod("ft-0"), unscheduled]))
    assert status["reason"] == r.UNSCHEDULABLE
    assert "Insufficient nvidia.com/gpu" in status["message"]


def test_image_pull_failure_is_named():
    waiting = pod("ft-0", "Pending", state={"waiting": {"reason": "ImagePullBackOff", "message": "not found"}})
    status = derive(make_spec(), Observed(job(), [waiting]))
    assert status["reason"] == r.IMAGE_PULL_FAILED
    assert "ImagePullBackOff" in status["message"]


def test_queued_job_waits_for_kueue_then_is_admitted():
    spec = make_spec(scheduling={"queueName": "team-a"})
    queued = derive(spec, Observed(job(suspend=True)))
    assert queued["phase"] == r.QUEUED
    assert "team-a" in queued["message"]
    assert find_condition(queued["conditions"], r.COND_QUEUED)["status"] == "True"
    admitted = derive(spec, Observed(job(), [pod("ft-0", "Pending")]), previous=queued)
    assert find_condition(admitted["conditions"], r.COND_ADMITTED)["status"] == "True"
    assert find_condition(admitted["conditions"], r.COND_QUEUED)["status"] == "False"
    assert admitted["queue"] == "team-a"


def test_user_suspension_and_resume():
    spec = make_spec(runPolicy={"suspend": True})
    suspended = derive(spec, Observed(job(suspend=True)))
    assert suspended["phase"] == r.SUSPENDED
    assert find_condition(suspended["conditions"], r.COND_SUSPENDED)["status"] == "True"
    resumed = derive(make_spec(), Observed(job(), []), previous=suspended)
    assert find_condition(resumed["conditions"], r.COND_SUSPENDED)["status"] == "False"
    assert resumed["phase"] == r.STARTING


def test_completed_job_succeeds_and_stays_succeeded():
    done = derive(make_spec(), Observed(job(conditions=[{"type": "Complete"}], completionTime="2026-11-28T11:59:00Z")))
    assert done["phase"] == r.SUCCEEDED
    assert done["completionTime"] == "2026-11-28T11:59:00Z"
    again = derive(make_spec(), Observed(job=None), previous=done)
    assert again["phase"] == r.SUCCEEDED


def failed_pod(exit_code, message="", reason="Error"):
    return pod(
        "ft-0-abc",
        "Failed",
        state={
            "terminated": {
                "exitCode": exit_code,
                "reason": reason,
                "message": message,
                "finishedAt": "2026-11-28T11:00:00Z",
            }
        },
    )


@pytest.mark.parametrize(
    ("exit_code", "message", "term_reason", "expected"),
    [
        (
            3,
            json.dumps({"reason": "InvalidData", "message": "train.csv row 4: label 'maybe' unknown"}),
            "Error",
            r.INVALID_DATA,
        ),
        (3, "", "Error", r.INVALID_DATA),
        (137, "", "OOMKilled", r.OUT_OF_MEMORY),
        (4, "", "Error", r.OUT_OF_MEMORY),
        (1, "Traceback: boom", "Error", r.TRAINER_CRASHED),
    ],
)
def test_failed_job_is_classified_from_the_trainers_exit(exit_code, message, term_reason, expected):
    failed_job = job(conditions=[{"type": "Failed", "reason": "BackoffLimitExceeded"}], failed=4)
    status = derive(make_spec(resources=ONE_NODE), Observed(failed_job, [failed_pod(exit_code, message, term_reason)]))
    assert status["phase"] == r.FAILED
    assert status["reason"] == expected
    assert status["failure"]["exitCode"] == exit_code
    assert status["retries"] == 4
    assert find_condition(status["conditions"], r.COND_FAILED)["reason"] == expected


def test_invalid_data_message_carries_the_trainers_words_and_a_hint():
    message = json.dumps({"reason": "InvalidData", "message": "train.csv row 4: label 'maybe' unknown"})
    status = derive(
        make_spec(),
        Observed(job(conditions=[{"type": "Failed", "reason": "PodFailurePolicy"}]), [failed_pod(3, message)]),
    )
    assert status["message"].startswith("train.csv row 4: label 'maybe' unknown")
    assert "retrying cannot help" in status["message"]


def test_deadline_exceeded():
    status = derive(make_spec(), Observed(job(conditions=[{"type": "Failed", "reason": "DeadlineExceeded"}])))
    assert status["reason"] == r.DEADLINE_EXCEEDED


def test_retry_is_reported_while_replacement_pods_start():
    status = derive(make_spec(resources=ONE_NODE), Observed(job(failed=1), [pod("ft-0", "Pending")]))
    assert status["reason"] == r.RETRYING
    assert status["message"].startswith("retry 1 of 3")


def test_last_transition_time_moves_only_when_status_flips():
    spec = make_spec()
    first = derive(spec, Observed(job(), [pod("ft-0", "Pending")]))
    later = derive(
        spec,
        Observed(job(), [pod("ft-0", "Pending"), pod("ft-1", "Pending")]),
        previous=first,
        now=NOW + timedelta(minutes=5),
    )
    before = find_condition(first["conditions"], r.COND_RUNNING)["lastTransitionTime"]
    assert find_condition(later["conditions"], r.COND_RUNNING)["lastTransitionTime"] == before
    running = derive(spec, Observed(job(), [pod("ft-0"), pod("ft-1")]), previous=later, now=NOW + timedelta(minutes=9))
    assert find_condition(running["conditions"], r.COND_RUNNING)["lastTransitionTime"] == "2026-11-28T12:09:00Z"


def test_unchanged_status_yields_no_changes():
    spec = make_spec()
    status = derive(spec, Observed(job(), [pod("ft-0"), pod("ft-1")]))
    again = derive(spec, Observed(job(), [pod("ft-0"), pod("ft-1")]), previous=status, now=NOW + timedelta(minutes=1))
    assert status_changes(status, again) == {}


def test_startup_deadline_counts_from_admission():
    spec = make_spec(runPolicy={"startupDeadlineSeconds": 600})
    created = NOW - timedelta(hours=1)
    status = derive(spec, Observed(job(), [pod("ft-0", "Pending")]), now=NOW - timedelta(minutes=5))
    assert not startup_deadline_exceeded(spec, status, created, NOW)
    assert startup_deadline_exceeded(spec, status, created, NOW + timedelta(minutes=6))
    failed = startup_failure_status(status, generation=1, now=NOW)
    assert failed["phase"] == r.FAILED and failed["reason"] == r.STARTUP_DEADLINE_EXCEEDED


def test_queued_job_never_hits_the_startup_deadline():
    spec = make_spec(scheduling={"queueName": "q"}, runPolicy={"startupDeadlineSeconds": 1})
    status = derive(spec, Observed(job(suspend=True)))
    assert not startup_deadline_exceeded(spec, status, NOW - timedelta(days=1), NOW)


def test_unschedulable_job_fails_with_reason_unschedulable_after_the_deadline():
    unscheduled = pod(
        "ft-0",
        "Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "Insufficient nvidia.com/gpu",
            }
        ],
    )
    status = derive(make_spec(resources={"nodes": 1}), Observed(job(), [unscheduled]))
    failed = startup_failure_status(status, generation=1, now=NOW)
    assert failed["reason"] == r.UNSCHEDULABLE
    assert "Insufficient nvidia.com/gpu" in failed["message"]


def test_ttl_after_finished():
    spec = make_spec(runPolicy={"ttlSecondsAfterFinished": 60})
    status = {"phase": r.SUCCEEDED, "completionTime": "2026-11-28T12:00:00Z"}
    assert not ttl_expired(spec, status, NOW + timedelta(seconds=59))
    assert ttl_expired(spec, status, NOW + timedelta(seconds=60))
    assert not ttl_expired(make_spec(), status, NOW + timedelta(days=365))


def test_ranks_that_finished_keep_the_job_running_until_the_job_completes():
    done = pod("ft-0", "Succeeded", state={"terminated": {"exitCode": 0, "reason": "Completed"}})
    status = derive(make_spec(resources={"nodes": 2}), Observed(job(active=1), [done, pod("ft-1")]))
    assert status["phase"] == r.RUNNING
    assert status["reason"] == r.FINISHING
    alone = derive(make_spec(resources={"nodes": 1}), Observed(job(), [done]))
    assert (alone["phase"], alone["message"]) == (
        r.RUNNING,
        "1 of 1 trainer pods finished; waiting for the Job to complete",
    )


def test_a_running_job_whose_ranks_finished_writes_nothing_until_the_job_completes():
    # The Job controller marks the Job Complete moments later: that write (Succeeded) is the one that counts.
    done = pod("ft-0", "Succeeded", state={"terminated": {"exitCode": 0, "reason": "Completed"}})
    spec = make_spec(resources={"nodes": 1})
    running = derive(spec, Observed(job(), [pod("ft-0")]))
    assert running["phase"] == r.RUNNING
    finishing = derive(spec, Observed(job(), [done]), previous=running)
    assert status_changes(running, finishing) == {}


def test_a_running_job_whose_step_stands_still_is_stalled_until_it_moves():
    from finetune_operator.status import apply_stall

    running = derive(make_spec(resources={"nodes": 1}), Observed(job(), [pod("ft-0")]))
    assert apply_stall(running, 60, 900, generation=1, now=NOW) is False
    assert find_condition(running["conditions"], r.COND_STALLED) is None  # never stalled: no condition at all
    assert apply_stall(running, 901, 900, generation=1, now=NOW) is True
    stalled = find_condition(running["conditions"], r.COND_STALLED)
    assert (stalled["status"], stalled["reason"]) == ("True", r.NO_PROGRESS)
    assert apply_stall(running, 5, 900, generation=1, now=NOW + timedelta(minutes=1)) is False
    moving = find_condition(running["conditions"], r.COND_STALLED)
    assert (moving["status"], moving["reason"]) == ("False", r.PROGRESSING)


def test_only_running_jobs_can_stall():
    from finetune_operator.status import apply_stall

    queued = derive(make_spec(scheduling={"queueName": "q"}), Observed(job(suspend=True)))
    assert apply_stall(queued, 10_000, 900, generation=1, now=NOW) is False
