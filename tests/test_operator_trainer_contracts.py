"""The contracts between the trainer and the operator, checked from one end to the other.

The two sides ship in different images and share no code: each keeps its own half of every contract
(docs/pod-contract.md, docs/progress.md). These tests feed what the trainer produces to the operator's reader.
"""

from __future__ import annotations

import json
import typing

from finetune_operator import gang, reasons
from finetune_operator.builders.job import gang_pod_failure_policy, pod_failure_policy
from finetune_operator.failure import _reported_failure, pod_failure
from finetune_operator.progress import report as operator_report
from finetune_operator.termination import _metrics_of
from finetune_trainer import errors
from finetune_trainer.reporting import report as trainer_report
from finetune_trainer.reporting.gpu import GpuSample
from hypothesis import given, settings
from hypothesis import strategies as st

# --- exit codes and failure reasons -----------------------------------------------------------------


class DistBackendError(RuntimeError):
    """Named like torch.distributed's, which classify_exception recognises by name."""


TRAINER_FAILURES = [
    errors.InvalidData("train.csv row 3: unknown label 'maybe'"),
    MemoryError(),
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    DistBackendError("watchdog caught collective operation timeout"),
    RuntimeError("Read error [10.0.0.7]:29500: Connection reset by peer"),
    ValueError("a bug"),
    errors.StorageAccessDenied(
        "model s3://b/m: refused (InvalidAccessKeyId)", uri="s3://b/m", code="InvalidAccessKeyId"
    ),
    errors.StorageNotFound("model s3://b/m: not found (NoSuchBucket)", uri="s3://b/m", code="NoSuchBucket"),
    errors.StorageUnavailable("output s3://b/o: unavailable (SlowDown)", uri="s3://b/o", code="SlowDown"),
    errors.StorageRequestRejected(
        "data s3://b/d: rejected (PermanentRedirect)", uri="s3://b/d", code="PermanentRedirect"
    ),
    errors.HubUnreachable("model hf://org/m: the Hub cannot be reached", uri="hf://org/m"),
]
# The reasons of a rank that stopped on SIGTERM, or because another rank did.
STOP_REASONS = [errors.STOPPED, errors.STOPPED_BY_PEER, errors.PEER_LOST]


def test_each_exit_code_the_trainer_uses_means_the_same_reason_to_the_operator():
    for failure in TRAINER_FAILURES:
        code, reason = errors.classify_exception(failure)
        assert reason in reasons.FAILURE_REASONS, f"the operator does not know the trainer's reason {reason}"
        if code in reasons.EXIT_CODE_REASONS:
            assert reasons.EXIT_CODE_REASONS[code] == reason, f"exit code {code}: {reason} vs the operator's"
    for reason in STOP_REASONS:
        assert reason in reasons.FAILURE_REASONS, f"the operator does not know the trainer's reason {reason}"
    assert set(reasons.FOLLOWER_REASONS) == {errors.STOPPED_BY_PEER, errors.PEER_LOST}
    assert errors.EXIT_INVALID_DATA == reasons.EXIT_INVALID_DATA
    assert errors.EXIT_OUT_OF_MEMORY == reasons.EXIT_OUT_OF_MEMORY
    assert errors.EXIT_COMMUNICATION_TIMEOUT == reasons.EXIT_COMMUNICATION_TIMEOUT


def test_every_failure_class_of_the_trainer_has_its_exit_code_reason_and_hint_on_the_operators_side():
    operator_codes = {reason: code for code, reason in reasons.EXIT_CODE_REASONS.items()}
    for failure in errors.KNOWN_FAILURES:
        assert operator_codes.get(failure.reason) == failure.exit_code, failure.reason
        assert failure.reason in reasons.FAILURE_HINTS, f"no hint tells a user what to do about {failure.reason}"
    assert errors.EXIT_CODES_BY_REASON == {f.reason: f.exit_code for f in errors.KNOWN_FAILURES}
    assert len(set(errors.EXIT_CODES_BY_REASON.values())) == len(errors.KNOWN_FAILURES), "one code per reason"


def test_what_the_trainer_calls_final_is_what_the_operator_never_retries():
    final = {f.reason for f in errors.KNOWN_FAILURES if f.final}
    assert final == set(reasons.FINAL_TRAINER_REASONS) == set(gang.FINAL_REASONS)
    assert errors.StorageUnavailable.reason not in final, "the next attempt may reach the store"
    assert errors.FINAL_EXIT_CODES == reasons.FINAL_EXIT_CODES
    rules = pod_failure_policy()["rules"]
    fail_job = [r["onExitCodes"]["values"] for r in rules if r["action"] == "FailJob" and "onExitCodes" in r]
    count = [r["onExitCodes"]["values"] for r in rules if r["action"] == "Count"]
    assert fail_job == [list(errors.FINAL_EXIT_CODES)]
    assert count == [[0, *errors.FINAL_EXIT_CODES]], "every other non-zero code, StorageUnavailable's too, counts"
    assert errors.EXIT_STORAGE_UNAVAILABLE not in fail_job[0]
    # Several ranks: any failure ends the attempt, and gang.py decides whether to restart (FINAL_REASONS above).
    gang_rules = gang_pod_failure_policy()["rules"]
    assert {"containerName": "trainer", "operator": "NotIn", "values": [0]} in [
        r.get("onExitCodes") for r in gang_rules
    ]


def _failed_pod(exit_code: int, message: str | None) -> dict:
    terminated = {"exitCode": exit_code, "reason": "Error", "finishedAt": "2026-12-07T12:00:00Z"}
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {"name": "ft-0-abcde"},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}]},
    }


def test_a_storage_failure_the_trainer_reports_reads_back_with_its_uri_code_and_the_operators_hint():
    for failure in TRAINER_FAILURES:
        if not isinstance(failure, errors.StorageFailure):
            continue
        code, reason = errors.classify_exception(failure)
        read = pod_failure(_failed_pod(code, errors.termination_message(reason, str(failure))))
        assert (read.reason, read.exit_code) == (reason, code)
        assert read.message.startswith(str(failure)) and failure.uri in read.message
        assert read.message.endswith(reasons.FAILURE_HINTS[reason])
        # Without its termination message (a lost log file), the exit code alone still names the reason.
        assert pod_failure(_failed_pod(code, None)).reason == reason


@given(
    reason=st.sampled_from(sorted({errors.classify_exception(f)[1] for f in TRAINER_FAILURES})),
    message=st.text(max_size=6000),
)
@settings(max_examples=60, deadline=None)
def test_a_failure_message_the_trainer_writes_reads_back_as_its_reason_and_text(reason, message):
    text = errors.termination_message(reason, message)
    assert len(text.encode()) <= errors.TERMINATION_MESSAGE_LIMIT
    read_reason, read_message = _reported_failure(text)
    assert read_reason == reason
    assert message.startswith(read_message.removesuffix("…"))


@given(
    metrics=st.dictionaries(
        st.from_regex(r"[a-z_]{1,40}", fullmatch=True),
        st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6),
        max_size=300,
    )
)
@settings(max_examples=60, deadline=None)
def test_final_metrics_the_trainer_writes_are_the_finite_ones_the_operator_reads(metrics):
    text = errors.completion_message(42, metrics)
    assert len(text.encode()) <= errors.TERMINATION_MESSAGE_LIMIT
    read = _metrics_of(text)
    for key, value in read.items():
        assert float(metrics[key]) == value
    if len(text.encode()) < errors.TERMINATION_MESSAGE_LIMIT - 100:
        finite = {k for k, v in metrics.items() if v == v and v not in (float("inf"), float("-inf"))}
        assert set(read) == finite


# --- progress reports -----------------------------------------------------------------------------


def test_both_sides_agree_on_the_limits_of_a_report():
    assert trainer_report.MAX_BODY_BYTES == operator_report.MAX_REPORT_BYTES
    assert trainer_report.MAX_EVAL_METRICS == operator_report.MAX_EVAL_METRICS
    assert trainer_report.EVAL_KEY.pattern == operator_report.METRIC_KEY_PATTERN
    assert set(trainer_report.EVENTS) == set(typing.get_args(operator_report.Event))


numbers = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10**6)
snapshots = st.builds(
    trainer_report.ProgressSnapshot,
    step=st.integers(0, 10**7),
    total_steps=st.integers(0, 10**7),
    epoch=numbers,
    loss=numbers,
    learning_rate=numbers,
    eval_metrics=st.dictionaries(st.text(max_size=80), numbers, max_size=60),
    samples_per_second=numbers,
    tokens_per_second=numbers,
    checkpoint=st.none() | st.tuples(st.integers(0, 10**7), st.text(max_size=1100)),
    first_step_time=st.none() | st.floats(0, 4e9),
    pod=st.none() | st.text(min_size=1, max_size=300),
)
gpus = st.none() | st.builds(
    GpuSample,
    count=st.integers(0, 16),
    utilization_ratio=st.floats(0, 1),
    memory_used_bytes=st.integers(0, 2**40),
    memory_total_bytes=st.integers(0, 2**40),
)


@given(event=st.sampled_from(trainer_report.EVENTS), snapshot=snapshots, gpu=gpus, at=st.floats(0, 4e9))
@settings(max_examples=200, deadline=None)
def test_every_report_the_trainer_builds_is_accepted_by_the_operator_with_its_numbers(event, snapshot, gpu, at):
    body = json.dumps(trainer_report.build_report(event, snapshot, at=at, gpu=gpu)).encode()
    parsed = operator_report.parse_report(body)  # raises InvalidReport, naming the key, on any disagreement
    assert parsed.event == event and parsed.step == snapshot.step and parsed.totalSteps == snapshot.total_steps
    sent = json.loads(body)
    for key in ("epoch", "loss", "learningRate", "samplesPerSecond", "tokensPerSecond"):
        assert getattr(parsed, key) == sent.get(key)
    assert parsed.evalMetrics == sent.get("evalMetrics", {})


# --- the trainer's configuration ------------------------------------------------------------------


def test_the_operator_accepts_exactly_the_tasks_the_trainer_runs():
    from finetune_operator.spec.schema import TASKS as operator_tasks
    from finetune_trainer.arguments import TASKS as trainer_tasks

    assert tuple(operator_tasks) == tuple(trainer_tasks)
