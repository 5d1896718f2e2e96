"""What only a real cluster refuses (issue 15), decided without one: a child the API server rejects for
good, pods the Job controller cannot create, and a spec change after such a failure."""

from __future__ import annotations

from datetime import timedelta

import pytest
from finetune_operator import reasons as r
from finetune_operator.kube import ApiError
from finetune_operator.pod_creation import creation_failure, pods_missing
from finetune_operator.progress.records import JobRecord
from finetune_operator.reconcile.apply import ChildRejected, create_children
from finetune_operator.reconcile.job import plan_rejection
from finetune_operator.rejection import Rejection
from finetune_operator.status import Observed
from test_plan_job import CREATED, NOW, ftj, job, plan, pod, written

TOLERATION_422 = (
    'Job.batch "ft" is invalid: spec.template.spec.tolerations[0].operator: Unsupported value: "Sometimes": '
    'supported values: "Equal", "Exists"'
)
QUOTA_EVENT = {
    "reason": "FailedCreate",
    "type": "Warning",
    "count": 4,
    "lastTimestamp": "2026-11-28T12:00:00Z",
    "message": 'Error creating: pods "ft-0-abcde" is forbidden: exceeded quota: tiny, requested: pods=1, '
    "used: pods=0, limited: pods=0",
}


# --- a child refused for good --------------------------------------------------------------------


def test_a_refused_job_names_the_finetunejob_field_and_quotes_the_api_server():
    rejection = Rejection("Job", "ft", 422, TOLERATION_422)
    assert rejection.reason == r.INVALID_SPEC
    assert rejection.spec_field() == "spec.scheduling.tolerations"
    message = rejection.status_message()
    assert "fix spec.scheduling.tolerations" in message and 'Unsupported value: "Sometimes"' in message


def test_a_forbidden_child_fails_with_its_own_reason():
    rejection = Rejection(
        "ConfigMap",
        "ft-config",
        403,
        'configmaps "ft-config" is forbidden: unable to create '
        "new content in namespace ns because it is being terminated",
    )
    assert rejection.reason == r.FORBIDDEN and rejection.spec_field() is None
    assert "fix what the API server names" in rejection.status_message()


def test_a_rejection_fails_the_job_once_with_one_warning_and_no_retry():
    body = ftj({"phase": r.PENDING})
    result = plan_rejection(body, Rejection("Job", "ft", 422, TOLERATION_422), NOW)
    assert result.status["phase"] == r.FAILED and result.status["reason"] == r.INVALID_SPEC
    assert result.status["failure"]["reason"] == r.INVALID_SPEC
    assert [(e.type, e.reason) for e in result.events] == [("Warning", r.INVALID_SPEC)]
    assert result.metrics.failures == [r.INVALID_SPEC] and result.create == []
    # The next reconcile of the same spec does nothing: Failed is terminal until the spec changes.
    again = plan(written(body, result), Observed())
    assert again.create == [] and again.events == [] and again.metrics.failures == []
    assert "phase" not in again.status and "reason" not in again.status


def test_a_spec_change_after_a_refusal_starts_the_job_over_with_its_config_refreshed():
    failed = written(
        ftj({"phase": r.PENDING}), plan_rejection(ftj({}), Rejection("Job", "ft", 422, TOLERATION_422), NOW)
    )
    fixed = {**failed, "metadata": {**failed["metadata"], "generation": 2}}
    result = plan(fixed, Observed(), record=JobRecord("ns", "ft", uid="uid-1", created=CREATED, gpus=8))
    assert [c["kind"] for c in result.create[0]] == ["ConfigMap", "Secret", "Service", "Job"]
    assert result.refresh_children
    assert result.status["phase"] == r.STARTING
    assert result.status["failure"] is None and result.status["completionTime"] is None
    assert result.events[-1].type == "Normal"


def test_an_invalid_spec_edited_into_another_mistake_says_the_new_one():
    first = plan(ftj({}, task="no-such-task"), Observed())
    body = written(ftj({}, task="no-such-task"), first)
    edited = {**body, "metadata": {**body["metadata"], "generation": 2}, "spec": {**body["spec"], "task": "nope"}}
    second = plan(edited, Observed())
    assert second.status["message"] != first.status["message"] and "nope" in second.status["message"]
    assert [e.reason for e in second.events] == [r.INVALID_SPEC]


class RefusingKube:
    def __init__(self, status: int) -> None:
        self.status, self.created = status, []

    def create_if_absent(self, manifest):
        if manifest["kind"] == "Job":
            raise ApiError(self.status, "Invalid", TOLERATION_422)
        self.created.append(manifest["kind"])
        return True


def children():
    return [{"kind": kind, "metadata": {"name": "ft", "namespace": "ns"}} for kind in ("ConfigMap", "Job")]


@pytest.mark.parametrize("status", [400, 403, 422])
async def test_permanent_api_errors_on_create_are_rejections(status):
    with pytest.raises(ChildRejected) as caught:
        await create_children(RefusingKube(status), children())
    assert caught.value.rejection.status == status and caught.value.rejection.kind == "Job"


@pytest.mark.parametrize("status", [409, 429, 500, 503])
async def test_transient_api_errors_stay_errors_to_retry(status):
    kube = RefusingKube(status)
    if status == 409:
        kube.create_if_absent = lambda manifest: False  # AlreadyExists is answered as "absent: no"
        await create_children(kube, children())
        return
    with pytest.raises(ApiError):
        await create_children(kube, children())


# --- pods that cannot be created -----------------------------------------------------------------


def test_the_newest_failed_create_explains_missing_pods_with_quota_and_attempts():
    reason, message = creation_failure([QUOTA_EVENT], [])
    assert reason == r.PODS_CANNOT_BE_CREATED
    assert "exceeded quota: tiny, requested: pods=1, used: pods=0, limited: pods=0" in message
    assert "(4 attempts)" in message and "ResourceQuota" in message


def test_events_folded_by_the_recorder_read_the_same():
    folded = {**QUOTA_EVENT, "message": "(combined from similar events): " + QUOTA_EVENT["message"]}
    _, message = creation_failure([folded], [])
    assert "combined" not in message and ": pods " in message


def test_a_failed_create_older_than_the_newest_pod_is_history():
    later_pod = pod("ft-0", "Pending")
    later_pod["metadata"]["creationTimestamp"] = "2026-11-28T12:00:05Z"
    assert creation_failure([QUOTA_EVENT], [later_pod]) is None


def test_a_missing_priority_class_gets_its_own_hint():
    event = {
        **QUOTA_EVENT,
        "count": 1,
        "message": 'Error creating: pods "ft-0-x" is forbidden: no PriorityClass with name gpu-hihg was found',
    }
    _, message = creation_failure([event], [])
    assert "(" not in message.split(":")[0] and "spec.scheduling.priorityClassName" in message


def test_only_an_active_job_short_of_pods_is_asked_about():
    assert pods_missing(job(active=0), 0, 2)
    assert not pods_missing(job(active=2), 2, 2)
    assert not pods_missing(job(suspend=True), 0, 2)
    assert not pods_missing(job("Complete"), 0, 2)
    assert not pods_missing(None, 0, 2)


def test_the_status_says_why_pods_cannot_be_created_and_the_reconcile_looks_again():
    children = Observed(job(), [], failed_creates=[QUOTA_EVENT])
    result = plan(ftj({"phase": r.STARTING}), children, now=CREATED + timedelta(seconds=4))
    assert "phase" not in result.status  # still Starting: quota may free up (startupDeadlineSeconds applies)
    assert result.status["reason"] == r.PODS_CANNOT_BE_CREATED
    assert "exceeded quota: tiny" in result.status["message"]
    assert result.requeue_after == 1.0
    # Later in the job's life it looks less often, never less than every 30 s.
    assert plan(ftj({"phase": r.STARTING}), children, now=CREATED + timedelta(hours=1)).requeue_after == 30.0
    # All pods there: nothing to ask about.
    running = Observed(job(active=2), [pod("ft-0"), pod("ft-1")])
    assert plan(ftj({"phase": r.RUNNING}), running).requeue_after is None
