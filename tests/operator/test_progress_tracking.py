"""Job records: ETA from the measured step rate, status fields, GPU-seconds and stall time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from finetune_operator.progress.records import JobRecord, format_eta, progress_status
from finetune_operator.progress.report import InvalidReport, ProgressReport, parse_report

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


def report(step, total=1000, at=0, **extra):
    return ProgressReport.model_validate(
        {"time": (T0 + timedelta(seconds=at)).isoformat(), "event": "log", "step": step, "totalSteps": total, **extra}
    )


def test_eta_comes_from_the_measured_step_rate():
    record = JobRecord("ns", "job")
    record.accept(report(100, at=0), T0)
    assert record.eta_seconds() is None  # one point is no rate
    record.accept(report(200, at=50), T0 + timedelta(seconds=50))
    assert record.steps_per_second() == pytest.approx(2.0)
    assert record.eta_seconds() == pytest.approx(400.0)
    status = progress_status(record, T0 + timedelta(seconds=50))
    assert status["progress"]["percent"] == 20
    assert status["progress"]["etaSeconds"] == 400
    assert status["progress"]["eta"] == "6m40s"


def test_a_retry_resuming_from_an_earlier_checkpoint_restarts_the_rate():
    record = JobRecord("ns", "job")
    record.accept(report(100, at=0), T0)
    record.accept(report(200, at=10), T0)
    record.accept(report(150, at=100), T0)
    assert record.steps_per_second() is None
    record.accept(report(160, at=110), T0)
    assert record.steps_per_second() == pytest.approx(1.0)


def test_status_fields_carry_eval_metrics_checkpoint_and_first_step():
    record = JobRecord("ns", "job", created=T0 - timedelta(seconds=90))
    record.accept(
        report(
            10,
            total=40,
            epoch=0.5,
            loss=0.7,
            samplesPerSecond=12.5,
            firstStepTime=T0.isoformat(),
            evalMetrics={"eval_loss": 0.6, "eval_accuracy": 0.8},
            checkpoint={"step": 10, "path": "pvc://out/checkpoints/checkpoint-10"},
        ),
        T0,
    )
    # A later report without a checkpoint keeps the last one known.
    record.accept(report(12, total=40), T0 + timedelta(seconds=5))
    status = progress_status(record, T0 + timedelta(seconds=5))
    assert status["progress"]["step"] == 12
    assert status["checkpoint"] == {
        "step": 10,
        "path": "pvc://out/checkpoints/checkpoint-10",
        "time": "2026-11-28T12:00:00Z",
    }
    assert status["timeToFirstStepSeconds"] == 90.0
    assert status["progress"]["lastReportTime"] == "2026-11-28T12:00:05Z"
    assert "evalLoss" not in status["progress"]  # the last report had no eval metrics


def test_eval_loss_is_split_from_the_other_eval_metrics():
    record = JobRecord("ns", "job")
    record.accept(report(5, evalMetrics={"eval_loss": 0.25, "eval_f1": 0.9}), T0)
    progress = progress_status(record, T0)["progress"]
    assert progress["evalLoss"] == 0.25
    assert progress["evalMetrics"] == {"eval_f1": 0.9}


def test_gpu_seconds_accumulate_over_running_intervals_and_survive_via_status():
    record = JobRecord("ns", "job", gpus=8, gpu_seconds=100.0)
    record.set_running(True, T0)
    assert record.gpu_seconds_at(T0 + timedelta(seconds=10)) == pytest.approx(180.0)
    record.set_running(False, T0 + timedelta(seconds=10))
    assert record.gpu_seconds == pytest.approx(180.0)
    record.set_running(True, T0 + timedelta(seconds=100))  # a retry
    assert progress_status(record, T0 + timedelta(seconds=105))["gpuSeconds"] == 220.0


def test_time_without_progress_counts_from_the_last_step_change():
    record = JobRecord("ns", "job")
    assert record.seconds_without_progress(T0, running_since=None) is None  # not running
    assert record.seconds_without_progress(T0 + timedelta(seconds=60), running_since=T0) == 60
    record.accept(report(1), T0 + timedelta(seconds=70))
    record.accept(report(1), T0 + timedelta(seconds=500))  # same step: no progress
    assert record.seconds_without_progress(T0 + timedelta(seconds=1000), running_since=T0) == 930


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.6, "1m0s"), (250, "4m10s"), (7300, "2h1m")])
def test_eta_format(seconds, text):
    assert format_eta(seconds) == text


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"event": "log", "step": 1, "totalSteps": 2}', "time"),
        (b'{"time": "yesterday", "event": "log", "step": 1, "totalSteps": 2}', "RFC 3339"),
        (b'{"time": "2026-11-28T12:00:00", "event": "log", "step": 1, "totalSteps": 2}', "time zone"),
        (b'{"time": "2026-11-28T12:00:00Z", "event": "log", "step": -1, "totalSteps": 2}', "step"),
        (b'{"time": "2026-11-28T12:00:00Z", "event": "log", "step": "1", "totalSteps": 2}', "step"),
        (b'{"time": "2026-11-28T12:00:00Z", "event": "boom", "step": 1, "totalSteps": 2}', "event"),
        (b'{"time": "2026-11-28T12:00:00Z", "event": "log", "step": 1, "totalSteps": 2, "loss": NaN}', "loss"),
        (b'{"time": "2026-11-28T12:00:00Z", "event": "log", "step": 1, "totalSteps": 2, "admin": true}', "admin"),
        (
            b'{"time": "2026-11-28T12:00:00Z", "event": "log", "step": 1, "totalSteps": 2, "evalMetrics": {"bad key!": 1}}',
            "metric name",
        ),
        (b"{" + b" " * 20000 + b"}", "at most"),
    ],
)
def test_bad_reports_are_refused_naming_the_key(body, says):
    with pytest.raises(InvalidReport, match=says):
        parse_report(body)


def test_each_new_evaluation_is_kept_once_even_when_its_own_report_was_lost():
    record = JobRecord("ns", "trial", parent="search")
    record.accept(report(10, event="evaluate", evalMetrics={"eval_loss": 0.6}), T0)
    record.accept(report(12, evalMetrics={"eval_loss": 0.6}), T0)  # later reports repeat the last evaluation
    record.accept(report(25, evalMetrics={"eval_loss": 0.5}), T0)  # the `evaluate` report at 20 never arrived
    record.accept(report(25, event="evaluate", evalMetrics={"eval_loss": 0.5}), T0)
    assert list(record.evaluations) == [(10, {"eval_loss": 0.6}), (25, {"eval_loss": 0.5})]
