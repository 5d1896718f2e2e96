"""The Job controller's pure decisions (plan_job), without a server."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from finetune_sandbox.conditions import find_condition, format_time
from finetune_sandbox.jobs.plan import (
    LABEL_COMPLETION_INDEX,
    LABEL_CONTROLLER_UID,
    TRACKING_FINALIZER,
    build_pod,
    format_indexes,
    match_pod_failure_policy,
    parse_indexes,
    plan_job,
)

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def make_job(**spec) -> dict:
    base = {
        "completionMode": "Indexed",
        "completions": 2,
        "parallelism": 2,
        "backoffLimit": 1,
        "template": {
            "metadata": {"labels": {"app": "train"}},
            "spec": {
                "restartPolicy": "Never",
                "subdomain": "train",
                "containers": [{"name": "trainer", "image": "img", "command": ["python"]}],
            },
        },
    }
    base.update(spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train", "namespace": "ns", "uid": "uid-1"},
        "spec": base,
        "status": {},
    }


def counter_suffix():
    counter = itertools.count()
    return lambda: f"s{next(counter)}"


def pod_with(
    job: dict,
    index: int,
    phase: str | None = None,
    *,
    exit_code: int | None = None,
    conditions: list | None = None,
    deleting: bool = False,
    tracked: bool = True,
) -> dict:
    pod = build_pod(job, index, f"p{index}")
    pod["status"] = {"phase": phase or "Running", "conditions": conditions or []}
    if exit_code is not None:
        pod["status"]["containerStatuses"] = [{"name": "trainer", "state": {"terminated": {"exitCode": exit_code}}}]
    if deleting:
        pod["metadata"]["deletionTimestamp"] = format_time(NOW)
    if not tracked:
        pod["metadata"]["finalizers"] = []
    return pod


def with_status(job: dict, status: dict) -> dict:
    return {**job, "status": status}


def test_indexed_job_creates_one_labelled_owned_pod_per_index():
    job = make_job()
    plan = plan_job(job, [], NOW, suffix=counter_suffix())

    names = [pod["metadata"]["name"] for pod in plan.create]
    assert names == ["train-0-s0", "train-1-s1"]
    pod = plan.create[1]
    meta = pod["metadata"]
    assert meta["labels"] == {
        "app": "train",
        "batch.kubernetes.io/job-name": "train",
        "job-name": "train",
        "batch.kubernetes.io/controller-uid": "uid-1",
        "controller-uid": "uid-1",
        "batch.kubernetes.io/job-completion-index": "1",
    }
    assert meta["annotations"] == {"batch.kubernetes.io/job-completion-index": "1"}
    assert meta["finalizers"] == [TRACKING_FINALIZER]
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "train",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert pod["spec"]["hostname"] == "train-1"
    assert pod["spec"]["subdomain"] == "train"
    assert {
        "name": "JOB_COMPLETION_INDEX",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}},
    } in pod["spec"]["containers"][0]["env"]
    assert plan.status["active"] == 2
    assert plan.status["startTime"] == format_time(NOW)
    # The template itself is not changed by building pods from it.
    assert "env" not in job["spec"]["template"]["spec"]["containers"][0]


def test_parallelism_limits_pods_and_running_indexes_are_not_duplicated():
    job = make_job(completions=3, parallelism=2)
    running = pod_with(job, 0)
    plan = plan_job(job, [running], NOW, suffix=counter_suffix())
    assert [pod["metadata"]["labels"][LABEL_COMPLETION_INDEX] for pod in plan.create] == ["1"]


def test_non_indexed_job_creates_pods_without_index():
    job = make_job(completionMode="NonIndexed", completions=3, parallelism=2)
    plan = plan_job(job, [], NOW, suffix=counter_suffix())
    assert [pod["metadata"]["name"] for pod in plan.create] == ["train-s0", "train-s1"]
    assert LABEL_COMPLETION_INDEX not in plan.create[0]["metadata"]["labels"]
    assert "hostname" not in plan.create[0]["spec"]
    assert "completedIndexes" not in plan.status


def test_succeeded_pods_complete_the_job_and_are_released():
    job = with_status(make_job(), {"startTime": format_time(NOW), "active": 2})
    pods = [pod_with(job, 0, "Succeeded", exit_code=0), pod_with(job, 1, "Succeeded", exit_code=0)]
    plan = plan_job(job, pods, NOW)

    assert plan.create == []
    assert sorted(plan.release) == ["train-0-p0", "train-1-p1"]
    assert plan.status["succeeded"] == 2
    assert plan.status["completedIndexes"] == "0-1"
    assert find_condition(plan.status["conditions"], "SuccessCriteriaMet")["status"] == "True"
    complete = find_condition(plan.status["conditions"], "Complete")
    assert (complete["status"], complete["reason"]) == ("True", "CompletionsReached")
    assert plan.status["completionTime"] == format_time(NOW)
    assert plan.status["active"] == 0


def test_counted_pods_are_not_counted_twice():
    job = with_status(make_job(), {"startTime": format_time(NOW), "succeeded": 1, "completedIndexes": "0"})
    pods = [pod_with(job, 0, "Succeeded", exit_code=0, tracked=False), pod_with(job, 1)]
    plan = plan_job(job, pods, NOW)
    assert plan.status["succeeded"] == 1
    assert plan.release == []
    assert plan.create == []


def test_failed_pod_is_counted_and_replaced_until_backoff_limit_then_job_fails():
    job = with_status(make_job(backoffLimit=1), {"startTime": format_time(NOW)})
    first = plan_job(job, [pod_with(job, 0, "Failed", exit_code=1), pod_with(job, 1)], NOW, suffix=counter_suffix())
    assert first.status["failed"] == 1
    assert [pod["metadata"]["name"] for pod in first.create] == ["train-0-s0"]
    assert find_condition(first.status["conditions"], "FailureTarget") is None

    job = with_status(job, first.status)
    running = pod_with(job, 1)
    second = plan_job(job, [pod_with(job, 0, "Failed", exit_code=1), running], NOW)
    assert second.status["failed"] == 2
    target = find_condition(second.status["conditions"], "FailureTarget")
    assert (target["status"], target["reason"]) == ("True", "BackoffLimitExceeded")
    assert second.delete == [running["metadata"]["name"]]
    # Failed waits until no pod runs any more, as the real 1.31+ controller does.
    assert find_condition(second.status["conditions"], "Failed") is None

    job = with_status(job, second.status)
    third = plan_job(job, [], NOW)
    failed = find_condition(third.status["conditions"], "Failed")
    assert (failed["status"], failed["reason"], failed["message"]) == (
        "True",
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    )


POLICY = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [3]}},
    ]
}


def test_pod_failure_policy_fail_job_on_exit_code_3():
    job = with_status(make_job(podFailurePolicy=POLICY, backoffLimit=5), {"startTime": format_time(NOW)})
    plan = plan_job(job, [pod_with(job, 0, "Failed", exit_code=3), pod_with(job, 1)], NOW)
    target = find_condition(plan.status["conditions"], "FailureTarget")
    assert target["reason"] == "PodFailurePolicy"
    assert target["message"] == (
        "Container trainer for pod ns/train-0-p0 failed with exit code 3 matching FailJob rule at index 1"
    )
    assert plan.create == []
    assert plan.delete == ["train-1-p1"]


def test_pod_failure_policy_ignores_disrupted_pods_and_replaces_them():
    job = with_status(make_job(podFailurePolicy=POLICY, backoffLimit=0), {"startTime": format_time(NOW)})
    disrupted = pod_with(job, 0, "Failed", exit_code=143, conditions=[{"type": "DisruptionTarget", "status": "True"}])
    plan = plan_job(job, [disrupted, pod_with(job, 1)], NOW, suffix=counter_suffix())
    assert plan.status["failed"] == 0
    assert [pod["metadata"]["name"] for pod in plan.create] == ["train-0-s0"]
    assert plan.release == ["train-0-p0"]


def test_with_a_policy_terminating_pods_wait_for_their_phase_and_block_replacement():
    job = with_status(make_job(podFailurePolicy=POLICY), {"startTime": format_time(NOW)})
    plan = plan_job(job, [pod_with(job, 0, deleting=True), pod_with(job, 1)], NOW)
    assert plan.status["failed"] == 0
    assert plan.create == []
    assert plan.status["terminating"] == 1


def test_without_a_policy_a_terminating_pod_counts_as_failed_and_is_replaced():
    job = with_status(make_job(), {"startTime": format_time(NOW)})
    plan = plan_job(job, [pod_with(job, 0, deleting=True), pod_with(job, 1)], NOW, suffix=counter_suffix())
    assert plan.status["failed"] == 1
    assert [pod["metadata"]["name"] for pod in plan.create] == ["train-0-s0"]


@pytest.mark.parametrize(
    ("rule", "exit_code", "expected"),
    [
        ({"operator": "In", "values": [3]}, 3, "FailJob"),
        ({"operator": "In", "values": [3]}, 1, None),
        ({"operator": "NotIn", "values": [3]}, 1, "FailJob"),
        ({"operator": "NotIn", "values": [3]}, 3, None),
        ({"operator": "NotIn", "values": [3]}, 0, None),
        ({"containerName": "other", "operator": "In", "values": [3]}, 3, None),
    ],
)
def test_on_exit_codes_matching(rule, exit_code, expected):
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "status": {"containerStatuses": [{"name": "trainer", "state": {"terminated": {"exitCode": exit_code}}}]},
    }
    action, _ = match_pod_failure_policy({"rules": [{"action": "FailJob", "onExitCodes": rule}]}, pod)
    assert action == expected


def test_suspend_deletes_active_pods_and_resume_recreates_them_with_a_new_start_time():
    started = NOW - dt.timedelta(minutes=5)
    job = with_status(make_job(suspend=True), {"startTime": format_time(started)})
    running = [pod_with(job, 0), pod_with(job, 1)]
    suspended = plan_job(job, running, NOW)
    assert sorted(suspended.delete) == ["train-0-p0", "train-1-p1"]
    condition = find_condition(suspended.status["conditions"], "Suspended")
    assert (condition["status"], condition["reason"], condition["message"]) == ("True", "JobSuspended", "Job suspended")
    assert suspended.status["active"] == 0
    assert suspended.status["failed"] == 0

    later = NOW + dt.timedelta(minutes=1)
    resumed_job = with_status(make_job(suspend=False), suspended.status)
    resumed = plan_job(resumed_job, [], later, suffix=counter_suffix())
    condition = find_condition(resumed.status["conditions"], "Suspended")
    assert (condition["status"], condition["reason"]) == ("False", "JobResumed")
    assert condition["lastTransitionTime"] == format_time(later)
    assert resumed.status["startTime"] == format_time(later)
    assert len(resumed.create) == 2


def test_job_created_suspended_has_no_start_time_and_no_pods():
    plan = plan_job(make_job(suspend=True), [], NOW)
    assert plan.create == []
    assert "startTime" not in plan.status


def test_active_deadline_fails_the_job_and_deletes_running_pods():
    job = with_status(make_job(activeDeadlineSeconds=10), {"startTime": format_time(NOW)})
    early = plan_job(job, [pod_with(job, 0), pod_with(job, 1)], NOW + dt.timedelta(seconds=4))
    assert early.delete == []
    assert early.requeue_after == pytest.approx(6.0)

    late = plan_job(job, [pod_with(job, 0), pod_with(job, 1)], NOW + dt.timedelta(seconds=10))
    assert sorted(late.delete) == ["train-0-p0", "train-1-p1"]
    assert find_condition(late.status["conditions"], "FailureTarget")["reason"] == "DeadlineExceeded"
    final = plan_job(with_status(job, late.status), [], NOW + dt.timedelta(seconds=11))
    failed = find_condition(final.status["conditions"], "Failed")
    assert (failed["reason"], failed["message"]) == (
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    )


def test_ttl_after_finished_deletes_the_job_when_due():
    finished = NOW
    status = {
        "completionTime": format_time(finished),
        "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": format_time(finished)}],
    }
    job = with_status(make_job(ttlSecondsAfterFinished=5), status)
    waiting = plan_job(job, [], NOW + dt.timedelta(seconds=2))
    assert not waiting.delete_job
    assert waiting.requeue_after == pytest.approx(3.0)
    assert plan_job(job, [], NOW + dt.timedelta(seconds=5)).delete_job


def test_finished_job_without_ttl_is_left_alone():
    status = {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": format_time(NOW)}]}
    plan = plan_job(with_status(make_job(), status), [], NOW + dt.timedelta(days=1))
    assert not plan.delete_job and plan.requeue_after is None and plan.create == []


def test_pods_of_other_jobs_are_ignored():
    job = make_job()
    stranger = pod_with(job, 0)
    stranger["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    stranger["metadata"]["labels"][LABEL_CONTROLLER_UID] = "someone-else"
    plan = plan_job(job, [stranger], NOW, suffix=counter_suffix())
    assert len(plan.create) == 2


@pytest.mark.parametrize(
    ("indexes", "text"), [(set(), ""), ({0}, "0"), ({0, 1, 2, 4}, "0-2,4"), ({1, 3, 5, 6}, "1,3,5-6")]
)
def test_completed_indexes_round_trip(indexes, text):
    assert format_indexes(indexes) == text
    assert parse_indexes(text) == indexes
