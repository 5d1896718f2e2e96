"""status.failure carries the failing rank's evidence: the right reason for disruptions and lost nodes,
missing Secrets/ConfigMaps named while starting, and a bounded, redacted log tail."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from finetune_operator import reasons as r
from finetune_operator.conditions import find_condition
from finetune_operator.failure import LOG_TAIL_BYTES, LOG_TAIL_LINES, classify_failure, with_log_tail
from finetune_operator.spec import parse_spec
from finetune_operator.status import Observed, derive_status, startup_deadline_exceeded, startup_failure_status

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
SPEC = parse_spec(
    {
        "task": "text-classification",
        "model": {"source": "pvc://models/m"},
        "dataset": {"train": "pvc://data/t.csv"},
        "output": {"uri": "pvc://models/out"},
        "resources": {"nodes": 1},
        "secrets": {"hfToken": {"name": "hf-token", "key": "token"}},
        "runPolicy": {"startupDeadlineSeconds": 60},
    }
)
FAILED_JOB = {
    "metadata": {"name": "ft"},
    "spec": {},
    "status": {
        "failed": 3,
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ],
    },
}


def failed_pod(
    name, *, finished="2026-11-28T11:00:00Z", exit_code=1, message="", disruption=None, reason=None, node="gpu-1"
):
    conditions = []
    if disruption:
        conditions.append(
            {"type": "DisruptionTarget", "status": "True", "reason": disruption, "message": f"{disruption} happened"}
        )
    status = {
        "phase": "Failed",
        "conditions": conditions,
        "containerStatuses": [
            {
                "name": "trainer",
                "state": {"terminated": {"exitCode": exit_code, "finishedAt": finished, "message": message}},
            }
        ],
    }
    if reason:
        status["reason"] = reason
    return {"metadata": {"name": name}, "spec": {"nodeName": node}, "status": status}


def waiting_pod(name, reason, message):
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Pending",
            "conditions": [],
            "containerStatuses": [{"name": "trainer", "state": {"waiting": {"reason": reason, "message": message}}}],
        },
    }


def test_a_preempted_pod_is_the_reason_only_when_no_trainer_failed():
    preempted = failed_pod("ft-0-b", finished="2026-11-28T11:05:00Z", exit_code=143, disruption="PreemptionByScheduler")
    failure = classify_failure(FAILED_JOB, [preempted])
    assert failure.reason == r.PREEMPTED
    assert "PreemptionByScheduler" in failure.message and "checkpoint" in failure.message
    assert failure.pod == "ft-0-b"


def test_a_trainer_crash_outranks_a_later_preemption():
    # Disruptions do not consume backoffLimit: the crashes did, so they explain the failure.
    crashed = failed_pod("ft-0-a", finished="2026-11-28T11:00:00Z", exit_code=1, message="segfault in data loader")
    preempted = failed_pod("ft-0-b", finished="2026-11-28T11:05:00Z", exit_code=143, disruption="EvictionByEvictionAPI")
    failure = classify_failure(FAILED_JOB, [crashed, preempted])
    assert (failure.reason, failure.pod, failure.exit_code) == (r.TRAINER_CRASHED, "ft-0-a", 1)


def test_a_pod_whose_node_vanished_is_node_lost():
    by_reason = classify_failure(FAILED_JOB, [failed_pod("ft-0-a", reason="NodeLost", node="gpu-7")])
    by_gc = classify_failure(FAILED_JOB, [failed_pod("ft-0-b", disruption="DeletionByPodGC")])
    assert by_reason.reason == by_gc.reason == r.NODE_LOST
    assert "gpu-7" in by_reason.message


def test_secrets_in_a_termination_message_are_redacted():
    pod = failed_pod("ft-0", message="could not log in with HF_TOKEN=hf_SENTINELsentinel0123456789")
    failure = classify_failure(FAILED_JOB, [pod])
    assert "hf_SENTINEL" not in failure.message and "[REDACTED]" in failure.message


def test_a_failed_job_status_carries_a_bounded_redacted_log_tail():
    status = derive_status(
        SPEC, {}, Observed(FAILED_JOB, [failed_pod("ft-0", message="boom")]), job_name="ft", generation=1, now=NOW
    )
    log = (
        "\n".join(f"step {i} loss=0.{i}" for i in range(500))
        + "\nHF_TOKEN=hf_SENTINELsentinel0123456789\nRuntimeError: boom"
    )
    failure = with_log_tail(status["failure"], log)
    assert failure["reason"] == r.TRAINER_CRASHED and failure["pod"] == "ft-0"
    assert failure["logTail"].endswith("HF_TOKEN=[REDACTED]\nRuntimeError: boom")
    assert "hf_SENTINEL" not in failure["logTail"]
    assert len(failure["logTail"].splitlines()) == LOG_TAIL_LINES


def test_a_huge_log_line_is_cut_to_the_byte_bound_from_the_front():
    failure = with_log_tail({"reason": r.TRAINER_CRASHED, "message": "x"}, "a" * 100_000 + "THE END")
    assert len(failure["logTail"].encode()) <= LOG_TAIL_BYTES
    assert failure["logTail"].endswith("THE END")


def test_no_log_leaves_the_failure_unchanged():
    failure = {"reason": r.TRAINER_CRASHED, "message": "x", "pod": "ft-0"}
    assert with_log_tail(failure, None) == failure
    assert with_log_tail(failure, "") == failure


def test_a_missing_secret_is_named_while_starting():
    pod = waiting_pod("ft-0", "CreateContainerConfigError", 'secret "hf-token" not found')
    status = derive_status(
        SPEC,
        {},
        Observed({"metadata": {"name": "ft"}, "spec": {}, "status": {"active": 1}}, [pod]),
        job_name="ft",
        generation=1,
        now=NOW,
    )
    assert (status["phase"], status["reason"]) == (r.STARTING, r.CONFIG_ERROR)
    assert 'secret "hf-token" not found' in status["message"]
    assert "own namespace" in status["message"]
    assert find_condition(status["conditions"], r.COND_RUNNING)["reason"] == r.CONFIG_ERROR


def test_a_missing_secret_fails_the_job_as_config_error_after_the_startup_deadline():
    pod = waiting_pod("ft-0", "CreateContainerConfigError", 'secret "hf-token" not found')
    job = {"metadata": {"name": "ft"}, "spec": {}, "status": {"active": 1}}
    status = derive_status(SPEC, {}, Observed(job, [pod]), job_name="ft", generation=1, now=NOW)
    later = NOW + timedelta(seconds=61)
    assert startup_deadline_exceeded(SPEC, status, NOW - timedelta(seconds=1), later)
    failed = startup_failure_status(status, generation=1, now=later)
    assert (failed["phase"], failed["reason"]) == (r.FAILED, r.CONFIG_ERROR)
    assert failed["message"].count(r.FAILURE_HINTS[r.CONFIG_ERROR]) == 1
