"""Gang restarts of a multi-rank job (gang.py, and plan_job around them): pure, no cluster.

A multi-rank Job fails as a whole at its first rank failure; the operator names the rank, counts the
restart once (a disruption not at all), waits until the Job controller has stopped every rank, deletes the
Job and sends a new one with what is left of the deadline.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from finetune_operator import reasons as r
from finetune_operator.builders import build_job
from finetune_operator.config import OperatorConfig
from finetune_operator.gang import first_failed_rank, gang_verdict
from finetune_operator.progress.records import JobRecord
from finetune_operator.reconcile.job import JobObservation, plan_job
from finetune_operator.reconcile.observe import children_of
from finetune_operator.spec import parse_spec
from finetune_operator.status import Observed

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)
CREATED = NOW - timedelta(minutes=30)
CONFIG = OperatorConfig.from_env()
SPEC = {
    "task": "text-classification",
    "model": {"source": "pvc://models/minilm"},
    "dataset": {"train": "pvc://data/train.csv"},
    "output": {"uri": "pvc://models/out"},
    "resources": {"nodes": 2, "gpusPerNode": 1},
    "runPolicy": {"backoffLimit": 2, "activeDeadlineSeconds": 3600},
}


def make_spec(**overrides: Any):
    return parse_spec({**SPEC, **overrides})


def failed_job(uid: str = "job-1", *, terminal: bool = True, message: str = "") -> dict[str, Any]:
    conditions = [{"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy", "message": message}]
    if terminal:
        conditions.append({"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": message})
    return {
        "metadata": {"name": "ft", "namespace": "ns", "uid": uid},
        "spec": {"suspend": False},
        "status": {"conditions": conditions, "failed": 2},
    }


def rank_pod(
    rank: int,
    *,
    exit_code: int = 1,
    finished: str = "2026-12-07T11:59:00Z",
    report: str | None = None,
    disrupted: bool = False,
    phase: str = "Failed",
    owner: str = "job-1",
) -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "finishedAt": finished, "reason": "Error"}
    if report:
        terminated["message"] = json.dumps({"reason": report, "message": f"rank {rank} says {report}"})
    conditions = (
        [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler", "message": "preempted"}]
        if disrupted
        else []
    )
    state = {"terminated": terminated} if phase == "Failed" else {"running": {"startedAt": "x"}}
    return {
        "metadata": {
            "name": f"ft-{rank}-abcde",
            "labels": {"batch.kubernetes.io/job-completion-index": str(rank)},
            "ownerReferences": [{"kind": "Job", "uid": owner, "controller": True}],
        },
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": [{"name": "trainer", "state": state}],
        },
    }


# --- who failed ----------------------------------------------------------------------------------


def test_the_rank_that_ended_on_its_own_is_named_not_the_ranks_that_lost_it():
    # Rank 1 crashed; rank 0 failed a second *earlier* by the clock but says it lost its peer.
    pods = [
        rank_pod(0, report=r.PEER_LOST, finished="2026-12-07T11:58:59Z"),
        rank_pod(1, exit_code=1, finished="2026-12-07T11:59:00Z"),
    ]
    culprit = first_failed_rank(failed_job(), pods)
    assert (culprit.rank, culprit.failure.pod, culprit.failure.reason) == (1, "ft-1-abcde", r.TRAINER_CRASHED)
    assert culprit.counted and culprit.job_uid == "job-1"


def test_a_deleted_rank_is_named_before_the_rank_that_stopped_with_it():
    pods = [
        rank_pod(0, exit_code=143, report=r.STOPPED),
        rank_pod(1, exit_code=143, report=r.STOPPED_BY_PEER),
    ]
    culprit = first_failed_rank(failed_job(), pods)
    assert (culprit.rank, culprit.failure.reason, culprit.counted) == (0, r.STOPPED, True)
    assert "SIGTERM" in culprit.failure.message


def test_within_one_second_the_pod_the_job_controller_named_is_the_culprit():
    message = "Container trainer for pod ns/ft-1-abcde failed with exit code 1 matching FailJob rule at index 0"
    pods = [rank_pod(0), rank_pod(1)]
    assert first_failed_rank(failed_job(message=message), pods).rank == 1
    assert first_failed_rank(failed_job(), pods).rank == 0  # nothing else to go by: the lowest rank


@pytest.mark.parametrize(
    ("message", "rank", "reason", "exit_code", "counted"),
    [
        (
            "Container trainer for pod ns/ft-1-x7k2p failed with exit code 1 matching FailJob rule at index 1",
            1,
            r.TRAINER_CRASHED,
            1,
            True,
        ),
        (
            "Container trainer for pod ns/ft-0-x7k2p failed with exit code 143 matching FailJob rule at index 1",
            0,
            r.STOPPED,
            143,
            True,
        ),
        (
            "Pod ns/ft-1-x7k2p has condition DisruptionTarget matching FailJob rule at index 0",
            1,
            r.PREEMPTED,
            None,
            False,
        ),
    ],
)
def test_the_jobs_own_message_names_the_rank_once_its_pods_are_gone(message, rank, reason, exit_code, counted):
    # The Job controller releases a counted pod; a deleted pod then disappears before the operator looks.
    culprit = first_failed_rank(failed_job(message=message), [])
    assert (culprit.rank, culprit.failure.pod, culprit.failure.reason) == (rank, f"ft-{rank}-x7k2p", reason)
    assert (culprit.failure.exit_code, culprit.counted) == (exit_code, counted)
    assert first_failed_rank(failed_job(message="BackoffLimitExceeded"), []) is None


def test_a_disrupted_rank_does_not_count():
    culprit = first_failed_rank(failed_job(), [rank_pod(1, exit_code=143, disrupted=True)])
    assert culprit.failure.reason == r.PREEMPTED and not culprit.counted


# --- whether to restart --------------------------------------------------------------------------


def test_a_restart_counts_once_however_often_the_same_failure_is_seen():
    spec, job, pods = make_spec(), failed_job(), [rank_pod(1)]
    first = gang_verdict(spec, {"retries": 0}, job, pods)
    assert first.restart and (first.retries, first.restarts, first.recorded) == (1, 1, False)
    seen = {"retries": 1, "restarts": 1, "lastRestart": first.culprit.as_status("t")}
    again = gang_verdict(spec, seen, job, pods)
    assert again.restart and (again.retries, again.restarts, again.recorded) == (1, 1, True)


def test_a_disruption_restarts_without_using_the_backoff_limit():
    spec = make_spec(runPolicy={"backoffLimit": 0})
    verdict = gang_verdict(spec, {"retries": 0}, failed_job(), [rank_pod(0, exit_code=143, disrupted=True)])
    assert verdict.restart and (verdict.retries, verdict.restarts) == (0, 1)


def test_no_restart_once_the_backoff_limit_is_used_and_never_for_bad_data():
    spec = make_spec(runPolicy={"backoffLimit": 2})
    used = gang_verdict(spec, {"retries": 2, "restarts": 3}, failed_job(), [rank_pod(1)])
    assert not used.restart and (used.retries, used.restarts) == (2, 3)
    bad = gang_verdict(spec, {}, failed_job(), [rank_pod(0, exit_code=3, report=r.INVALID_DATA)])
    assert not bad.restart


def test_one_node_jobs_and_deadlines_are_not_gang_restarts():
    assert gang_verdict(make_spec(resources={"nodes": 1}), {}, failed_job(), [rank_pod(0)]) is None
    deadline = failed_job()
    deadline["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]
    assert gang_verdict(make_spec(), {}, deadline, [rank_pod(0)]) is None


# --- the Job ------------------------------------------------------------------------------------


def test_a_multi_rank_job_fails_as_a_whole_at_its_first_rank_failure():
    gang = build_job(make_spec(), "ft", "ns", config=CONFIG, config_hash="h")["spec"]
    assert gang["backoffLimit"] == 0
    actions = [
        (rule["action"], rule.get("onExitCodes"), rule.get("onPodConditions"))
        for rule in gang["podFailurePolicy"]["rules"]
    ]
    assert actions == [
        ("FailJob", None, [{"type": "DisruptionTarget", "status": "True"}]),
        ("FailJob", {"containerName": "trainer", "operator": "NotIn", "values": [0]}, None),
    ]
    single = build_job(make_spec(resources={"nodes": 1}), "ft", "ns", config=CONFIG, config_hash="h")["spec"]
    assert single["backoffLimit"] == 2  # the Job controller retries a single pod itself
    assert [rule["action"] for rule in single["podFailurePolicy"]["rules"]] == ["FailJob", "Ignore", "Count"]


def test_an_earlier_jobs_pods_are_not_the_new_jobs():
    job = {"metadata": {"name": "ft", "uid": "job-2"}}
    pods = [rank_pod(0, owner="job-1"), rank_pod(0, phase="Running", owner="job-2")]
    observed = children_of({("ns", "ft"): [job]}, {("ns", "ft"): pods}, "ns", "ft")
    assert [p["metadata"]["ownerReferences"][0]["uid"] for p in observed.pods] == ["job-2"]


# --- the reconcile, step by step -------------------------------------------------------------------


def reconcile(status: dict[str, Any], children: Observed, now: datetime = NOW, **spec: Any):
    body = {
        "metadata": {"name": "ft", "namespace": "ns", "uid": "ftj-uid", "generation": 1},
        "spec": {**SPEC, **spec},
        "status": status,
    }
    record = JobRecord("ns", "ft", uid="ftj-uid", created=CREATED, gpus=2, children_complete=True)
    observation = JobObservation(ftj=body, spec=parse_spec(body["spec"]), children=children, token="t")
    result = plan_job(observation, record, config=CONFIG, now=now)
    return result, {**status, **result.status}


RUNNING = {"phase": r.RUNNING, "reason": r.PODS_RUNNING, "startTime": "2026-12-07T11:30:00Z", "retries": 0}


def test_a_lost_rank_restarts_the_gang_once_the_job_controller_stopped_them_all():
    pods = [rank_pod(0, report=r.PEER_LOST), rank_pod(1, exit_code=1)]

    # The Job controller is still stopping the other ranks: say so, count it, keep the log; delete nothing yet.
    stopping, status = reconcile(RUNNING, Observed(failed_job(terminal=False), pods))
    assert status["phase"] == r.STARTING and status["reason"] == r.RESTARTING
    assert status["retries"] == 1 and status["restarts"] == 1
    last = status["lastRestart"]
    assert (last["rank"], last["pod"], last["reason"], last["counted"]) == (1, "ft-1-abcde", r.TRAINER_CRASHED, True)
    assert status["message"].startswith("rank 1 (pod ft-1-abcde) failed: TrainerCrashed; restarting all 2 ranks")
    assert "retry 1 of 2" in status["message"]
    assert stopping.log_tail == ("lastRestart", "ft-1-abcde")
    assert stopping.delete_jobs == [] and stopping.metrics.failures == []
    assert [(e.type, e.reason) for e in stopping.events] == [("Warning", r.RESTARTING)]

    # Every rank stopped: the failed Job goes (status first), counted no second time.
    deleting, status = reconcile(status, Observed(failed_job(), pods))
    assert deleting.delete_jobs == ["ft"] and deleting.status_first
    assert status["retries"] == 1 and deleting.log_tail is None and deleting.events == []

    # Gone: a new Job, whose deadline is what is left since the job first ran (30 minutes ago).
    later = NOW + timedelta(seconds=5)
    sending, status = reconcile(status, Observed(), now=later)
    [children] = sending.create
    new_job = children[-1]
    assert new_job["spec"]["activeDeadlineSeconds"] == 3600 - 30 * 60 - 5
    assert status["reason"] == r.RESTARTING and "restart 1 after rank 1 ended (TrainerCrashed)" in status["message"]

    # Its ranks run: Running, with the restart still on record.
    new = {"metadata": {"name": "ft", "uid": "job-2"}, "spec": {}, "status": {"active": 2}}
    running_pods = [rank_pod(0, phase="Running", owner="job-2"), rank_pod(1, phase="Running", owner="job-2")]
    _, status = reconcile(status, Observed(new, running_pods), now=later)
    assert status["phase"] == r.RUNNING and status["retries"] == 1 and status["lastRestart"]["rank"] == 1


def test_out_of_retries_the_gang_fails_naming_the_rank():
    pods = [rank_pod(1, exit_code=1)]
    result, status = reconcile({**RUNNING, "retries": 2, "restarts": 2}, Observed(failed_job(), pods))
    assert status["phase"] == r.FAILED and status["reason"] == r.TRAINER_CRASHED
    assert status["failure"]["pod"] == "ft-1-abcde"
    assert "no retries left (runPolicy.backoffLimit: 2, 2 restarts so far)" in status["message"]
    assert result.delete_jobs == [] and result.log_tail == ("failure", "ft-1-abcde")


@pytest.mark.parametrize("disrupted", [True, False])
def test_the_restart_event_says_whether_it_counted(disrupted):
    pods = [rank_pod(0, exit_code=143, disrupted=disrupted, report=None if disrupted else r.STOPPED)]
    _, status = reconcile(RUNNING, Observed(failed_job(), pods))
    assert ("not counted against runPolicy.backoffLimit" in status["message"]) is disrupted
    assert status["retries"] == (0 if disrupted else 1)


def test_the_rank_to_blame_is_named_only_once_it_has_stopped():
    # Rank 0's pod was deleted; rank 1 saved and stopped with it and was Failed first.
    follower = rank_pod(1, exit_code=143, report=r.STOPPED_BY_PEER)
    stopping_rank_0 = rank_pod(0, phase="Running")
    early, status = reconcile(RUNNING, Observed(failed_job(terminal=False), [stopping_rank_0, follower]))
    assert status["reason"] == r.RESTARTING and "waiting for all 2 ranks to stop" in status["message"]
    assert "lastRestart" not in status and status["retries"] == 0 and early.delete_jobs == []

    stopped = [rank_pod(0, exit_code=143, report=r.STOPPED), follower]
    settled, status = reconcile(status, Observed(failed_job(), stopped))
    last = status["lastRestart"]
    assert (last["rank"], last["reason"], last["counted"]) == (0, r.STOPPED, True)
    assert status["retries"] == 1 and settled.delete_jobs == ["ft"]
    # The reason did not change (Restarting already): the restart still gets its own event.
    [event] = settled.events
    assert (event.type, event.reason) == ("Warning", r.RESTARTING) and "rank 0 (pod ft-0-abcde) failed" in event.message
