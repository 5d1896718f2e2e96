"""Progress reporting: the sender against a local endpoint, and the callback driven by real Trainer
objects (a tiny BERT run, or TrainingArguments/TrainerState with a controlled clock)."""

from __future__ import annotations

import logging
import os
import socket
import time

import pytest
from finetune_trainer.reporting.callbacks import ProgressCallback
from finetune_trainer.reporting.prometheus import TrainerMetrics
from finetune_trainer.reporting.sender import ReportSender, _retry_after
from test_progress_helpers import RecordingSender, endpoint, free_port, tiny_trainer, validate_report  # noqa: F401
from transformers import TrainerControl, TrainerState, TrainingArguments

FAST = dict(min_backoff=0.05, max_backoff=0.4, timeout=2.0)


def report(step: int, event: str = "log") -> dict:
    return {"time": "2026-01-01T00:00:00.000Z", "event": event, "step": step, "totalSteps": 10}


# ---- sender ----


def test_report_is_posted_as_json_with_the_bearer_token_from_the_file(endpoint, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    metrics = TrainerMetrics()
    sender = ReportSender(endpoint.url, str(token), metrics=metrics, **FAST)
    sender.submit(report(1))
    assert sender.flush(5)
    [request] = endpoint.requests
    assert request["path"] == "/progress/v1/namespaces/ns/finetunejobs/job"
    assert request["headers"]["Authorization"] == "Bearer s3cret"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == report(1)
    assert metrics.reports_sent._value.get() == 1 and metrics.reports_failed._value.get() == 0


def test_5xx_and_429_are_retried_with_growing_backoff_until_accepted(endpoint):
    endpoint.answer(503, 429, 500)
    metrics = TrainerMetrics()
    sender = ReportSender(endpoint.url, metrics=metrics, **FAST)
    sender.submit(report(1))
    assert endpoint.wait_for(lambda: len(endpoint.requests) == 4)  # no flush: it would cut a backoff short
    assert sender.flush(5)
    assert [r["status"] for r in endpoint.requests] == [503, 429, 500, 204]
    assert all(body == report(1) for body in endpoint.bodies())
    gaps = [b["at"] - a["at"] for a, b in zip(endpoint.requests, endpoint.requests[1:])]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09 and gaps[2] >= 0.19  # 0.05, 0.1, 0.2 s
    assert metrics.reports_failed._value.get() == 3 and metrics.reports_sent._value.get() == 1


def test_retry_after_is_honoured_up_to_the_backoff_cap(endpoint):
    endpoint.answer((429, 0.0, {"Retry-After": "0.6"}), (429, 0.0, {"Retry-After": "3600"}))
    sender = ReportSender(endpoint.url, min_backoff=0.05, max_backoff=1.0, timeout=2)
    sender.submit(report(1))
    assert endpoint.wait_for(lambda: len(endpoint.requests) == 3)
    first, second, third = (r["at"] for r in endpoint.requests)
    assert 0.55 <= second - first < 1.0  # waited as asked, not the 0.05 s backoff
    assert 0.95 <= third - second < 1.5  # an hour asked: capped at max_backoff


def test_retry_after_parsing():
    assert _retry_after({"Retry-After": "3"}) == 3.0
    assert _retry_after({"Retry-After": "soon"}) is None
    assert _retry_after({}) is None


def test_connection_refused_is_retried_not_given_up():
    metrics = TrainerMetrics()
    port = free_port()
    sender = ReportSender(f"http://127.0.0.1:{port}/progress", metrics=metrics, **FAST)
    sender.submit(report(1))
    assert not sender.flush(0.3)
    assert metrics.reports_failed._value.get() >= 2  # tried again, not given up


def test_rotated_token_is_reread_after_403(endpoint, tmp_path):
    token = tmp_path / "token"
    token.write_text("old")
    endpoint.answer(*[lambda r: 204 if r["headers"].get("Authorization") == "Bearer new" else 403] * 20)
    sender = ReportSender(endpoint.url, str(token), **FAST)
    sender.submit(report(1))
    assert endpoint.wait_for(lambda: len(endpoint.requests) >= 1)
    token.write_text("new")  # the kubelet updated the mounted Secret
    assert sender.flush(5)
    assert endpoint.requests[0]["headers"]["Authorization"] == "Bearer old"
    assert endpoint.requests[-1]["headers"]["Authorization"] == "Bearer new"
    assert endpoint.requests[-1]["status"] == 204


def test_missing_token_file_sends_without_a_token_and_says_so(endpoint, tmp_path, caplog):
    sender = ReportSender(endpoint.url, str(tmp_path / "absent"), **FAST)
    with caplog.at_level(logging.WARNING, logger="finetune_trainer"):
        sender.submit(report(1))
        assert sender.flush(5)
    assert "Authorization" not in endpoint.requests[0]["headers"]
    assert "absent" in caplog.text


def test_other_4xx_drops_the_report_logs_once_and_later_reports_still_go(endpoint, caplog):
    endpoint.answer(400, 400)
    sender = ReportSender(endpoint.url, **FAST)
    with caplog.at_level(logging.WARNING, logger="finetune_trainer"):
        for step in (1, 2, 3):
            sender.submit(report(step))
            assert sender.flush(5)
    assert [(r["body"]["step"], r["status"]) for r in endpoint.requests] == [(1, 400), (2, 400), (3, 204)]
    assert caplog.text.count("answered 400") == 1
    assert "scripted 400" in caplog.text  # the endpoint's reason reaches the log


def test_newer_report_supersedes_one_still_waiting(endpoint):
    endpoint.answer((204, 0.3))  # the first request is slow: the next reports queue up behind it
    sender = ReportSender(endpoint.url, **FAST)
    sender.submit(report(1))
    assert endpoint.wait_for(lambda: sender._in_flight, 2)
    sender.submit(report(2))
    sender.submit(report(3))
    assert sender.flush(5)
    assert [body["step"] for body in endpoint.bodies()] == [1, 3]
    assert sender.superseded == 1


def test_report_superseded_during_backoff_is_not_resent(endpoint):
    endpoint.answer(503)
    sender = ReportSender(endpoint.url, **{**FAST, "min_backoff": 0.3})
    sender.submit(report(1))
    assert endpoint.wait_for(lambda: len(endpoint.requests) == 1)
    sender.submit(report(2, "end"))
    assert sender.flush(5)
    assert [(r["body"]["step"], r["status"]) for r in endpoint.requests] == [(1, 503), (2, 204)]


def test_flush_cuts_a_long_backoff_short(endpoint):
    endpoint.answer(503)
    sender = ReportSender(endpoint.url, min_backoff=20, max_backoff=30, timeout=2)
    sender.submit(report(1))
    assert endpoint.wait_for(lambda: len(endpoint.requests) == 1)
    started = time.monotonic()
    assert sender.flush(5)
    assert time.monotonic() - started < 2


def test_hung_endpoint_times_out_and_flush_returns_on_time():
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        metrics = TrainerMetrics()
        sender = ReportSender(
            f"http://127.0.0.1:{listener.getsockname()[1]}/p",
            metrics=metrics,
            timeout=0.3,
            min_backoff=0.05,
            max_backoff=0.1,
        )
        started = time.monotonic()
        sender.submit(report(1))
        assert not sender.flush(0.5)
        assert 0.45 < time.monotonic() - started < 1.0
        assert endpoint_failed_soon(metrics)


def endpoint_failed_soon(metrics: TrainerMetrics) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and metrics.reports_failed._value.get() < 1:
        time.sleep(0.02)
    return metrics.reports_failed._value.get() >= 1


# ---- callback, controlled clock ----


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(tmp_path, **args):
    """A callback with a recording sender, a fake clock and real Trainer state objects."""
    clock = Clock()
    sender = RecordingSender()
    callback = ProgressCallback(
        sender, interval_seconds=10, pod="pod-0", clock=clock, wall_clock=lambda: 1767323045.0 + clock.now
    )
    training_args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        report_to=[],
        use_cpu=True,
        **args,
    )
    state = TrainerState(max_steps=100)
    return callback, sender, clock, training_args, state, TrainerControl()


def step(callback, clock, training_args, state, control, *, at: float, log: dict | None = None):
    clock.now = at
    state.global_step += 1
    state.epoch = state.global_step / 50
    control.should_log = log is not None
    callback.on_step_end(training_args, state, control)
    if log is not None:
        callback.on_log(training_args, state, control, logs=log)


def test_reports_are_rate_limited_and_a_due_report_waits_for_the_log_at_that_step(tmp_path):
    callback, sender, clock, args, state, control = drive(tmp_path)
    callback.on_train_begin(args, state, control)
    for t in range(1, 10):  # 9 steps inside the first interval
        step(
            callback,
            clock,
            args,
            state,
            control,
            at=t,
            log={"loss": 2.0, "learning_rate": 1e-4} if t % 3 == 0 else None,
        )
    assert sender.events() == ["begin"]
    step(callback, clock, args, state, control, at=10)  # due, no log at this step
    step(callback, clock, args, state, control, at=12, log={"loss": 1.5, "learning_rate": 9e-5})  # not due
    step(
        callback, clock, args, state, control, at=20, log={"loss": 1.0, "learning_rate": 8e-5}
    )  # due and a log follows
    assert sender.events() == ["begin", "interval", "log"]
    interval, log = sender.reports[1:]
    assert (interval["step"], interval["loss"]) == (10, 2.0)
    assert (log["step"], log["loss"], log["learningRate"]) == (12, 1.0, 8e-5)
    for body in sender.reports:
        validate_report(body)


def test_throughput_first_step_time_and_epoch_come_from_the_steps(tmp_path):
    callback, sender, clock, args, state, control = drive(tmp_path)
    callback.on_train_begin(args, state, control)
    step(callback, clock, args, state, control, at=5.0)  # first step, includes warm-up
    for i in range(1, 31):
        step(callback, clock, args, state, control, at=5.0 + 0.5 * i)
    last = sender.reports[-1]
    validate_report(last)
    assert last["event"] == "interval"
    assert last["samplesPerSecond"] == pytest.approx(4 * 2 / 0.5)  # batch 4 x accumulation 2 per 0.5 s
    assert "tokensPerSecond" not in last  # Trainer did not count tokens
    assert last["firstStepTime"] == "2026-01-02T03:04:10.000Z"
    assert last["epoch"] == pytest.approx(state.epoch) and last["totalSteps"] == 100 and last["pod"] == "pod-0"


def test_tokens_per_second_when_the_trainer_counts_tokens(tmp_path):
    callback, sender, clock, args, state, control = drive(tmp_path)
    callback.on_train_begin(args, state, control)
    for i in range(1, 25):
        state.num_input_tokens_seen = 1000 * i
        step(callback, clock, args, state, control, at=1.0 * i)
    assert sender.reports[-1]["tokensPerSecond"] == pytest.approx(1000.0)


def test_evaluate_save_and_end_always_report_and_later_reports_keep_them(tmp_path):
    callback, sender, clock, args, state, control = drive(tmp_path)
    callback.on_train_begin(args, state, control)
    step(callback, clock, args, state, control, at=1)
    callback.on_evaluate(args, state, control, metrics={"eval_loss": 0.4, "eval_accuracy": 0.75, "epoch": 0.02})
    os.makedirs(tmp_path / "checkpoint-1")
    callback.on_save(args, state, control)
    step(callback, clock, args, state, control, at=30)
    callback.on_train_end(args, state, control)
    assert sender.events() == ["begin", "evaluate", "save", "interval", "end"]
    evaluate, save, interval, end = sender.reports[1:]
    assert evaluate["evalMetrics"] == {"eval_loss": 0.4, "eval_accuracy": 0.75}
    assert save["checkpoint"] == {"step": 1, "path": str(tmp_path / "checkpoint-1")}
    assert end["evalMetrics"] == evaluate["evalMetrics"] and end["checkpoint"] == save["checkpoint"]
    assert sender.flushes == [10.0]
    for body in sender.reports:
        validate_report(body)


def test_save_without_a_checkpoint_folder_reports_no_checkpoint(tmp_path):
    callback, sender, clock, args, state, control = drive(tmp_path)
    state.global_step = 3
    callback.on_save(args, state, control)
    assert sender.events() == ["save"] and "checkpoint" not in sender.reports[0]


def test_non_zero_ranks_report_nothing(endpoint, tmp_path):
    sender = ReportSender(endpoint.url, **FAST)
    callback = ProgressCallback(sender, interval_seconds=0)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    state, control = (
        TrainerState(max_steps=4, is_world_process_zero=False, is_local_process_zero=False),
        TrainerControl(),
    )
    callback.on_train_begin(args, state, control)
    for _ in range(4):
        state.global_step += 1
        callback.on_step_end(args, state, control)
        callback.on_log(args, state, control, logs={"loss": 1.0})
    callback.on_evaluate(args, state, control, metrics={"eval_loss": 1.0})
    callback.on_save(args, state, control)
    callback.on_train_end(args, state, control)
    assert sender._thread is None and endpoint.requests == []


def test_a_failing_reporter_never_raises_into_training_and_logs_once(tmp_path, caplog):
    class BrokenGpu:
        def sample(self):
            raise RuntimeError("NVML exploded")

    callback, sender, clock, args, state, control = drive(tmp_path)
    callback.gpu = BrokenGpu()
    with caplog.at_level(logging.ERROR, logger="finetune_trainer"):
        callback.on_train_begin(args, state, control)
        step(callback, clock, args, state, control, at=11)
        callback.on_train_end(args, state, control)
    assert caplog.text.count("progress reporting failed") == 1


# ---- callback, real Trainer runs ----


def test_tiny_training_run_delivers_valid_reports_and_the_end_report(endpoint, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0k")
    metrics = TrainerMetrics()
    sender = ReportSender(endpoint.url, str(token), metrics=metrics, **FAST)
    callback = ProgressCallback(sender, interval_seconds=3600, pod="job-worker-0")
    trainer = tiny_trainer(tmp_path / "checkpoints", [callback], max_steps=8, evaluate_every=4, save_every=4)
    trainer.train()
    bodies = endpoint.bodies()
    for body in bodies:
        validate_report(body)
    events = [b["event"] for b in bodies]
    # Newest-wins may drop an intermediate report; the first and the final ones always arrive.
    assert events[0] == "begin" and events[-1] == "end"
    assert set(events) <= {"begin", "evaluate", "save", "end"}  # the interval never came due
    end = bodies[-1]
    assert (end["step"], end["totalSteps"]) == (8, 8)
    assert end["checkpoint"] == {"step": 8, "path": str(tmp_path / "checkpoints" / "checkpoint-8")}
    assert "eval_loss" in end["evalMetrics"] and end["loss"] > 0 and end["learningRate"] >= 0
    assert end["samplesPerSecond"] > 0 and "firstStepTime" in end and end["pod"] == "job-worker-0"
    assert {r["headers"]["Authorization"] for r in endpoint.requests} == {"Bearer t0k"}
    assert metrics.reports_sent._value.get() == len(bodies)


def test_every_event_of_a_run_is_submitted_in_order(tmp_path):
    sender = RecordingSender()
    trainer = tiny_trainer(
        tmp_path, [ProgressCallback(sender, interval_seconds=3600)], max_steps=8, evaluate_every=4, save_every=4
    )
    trainer.train()
    assert sender.events() == ["begin", "evaluate", "save", "evaluate", "save", "end"]
    assert [r["step"] for r in sender.reports] == [0, 4, 4, 8, 8, 8]


def test_zero_interval_reports_every_step_or_log(tmp_path):
    sender = RecordingSender()
    tiny_trainer(tmp_path, [ProgressCallback(sender, interval_seconds=0)], max_steps=6).train()
    # logging_steps=2: steps 2, 4, 6 report from on_log with their loss, the others from on_step_end;
    # Trainer's closing summary log (train_loss, train_runtime) is one more log.
    assert sender.events() == ["begin", "interval", "log", "interval", "log", "interval", "log", "log", "end"]
    assert all("loss" in r for r in sender.reports if r["event"] == "log")


class TimedProgressCallback(ProgressCallback):
    """Measures how long training waits inside each callback event (wall time, immune to CPU load
    from other processes in a way whole-run timings are not)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.waited: dict[str, float] = {}

    def _timed(self, event, *args, **kwargs):
        started = time.monotonic()
        getattr(super(), event)(*args, **kwargs)
        self.waited[event] = self.waited.get(event, 0.0) + time.monotonic() - started

    def on_train_begin(self, *a, **k):
        self._timed("on_train_begin", *a, **k)

    def on_step_end(self, *a, **k):
        self._timed("on_step_end", *a, **k)

    def on_log(self, *a, **k):
        self._timed("on_log", *a, **k)

    def on_evaluate(self, *a, **k):
        self._timed("on_evaluate", *a, **k)

    def on_save(self, *a, **k):
        self._timed("on_save", *a, **k)

    def on_train_end(self, *a, **k):
        self._timed("on_train_end", *a, **k)


@pytest.mark.parametrize("kind", ["refused", "hung"])
def test_dead_endpoint_never_fails_or_slows_training(tmp_path, kind):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if kind == "hung":
            listener.listen(8)  # connects, never answers: each POST waits for its 5 s timeout
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/progress"
        callback = TimedProgressCallback(ReportSender(url, timeout=5.0), interval_seconds=0, flush_seconds=0.5)
        result = tiny_trainer(tmp_path, [callback], max_steps=8, evaluate_every=4, save_every=4).train()
    assert result.global_step == 8
    during = sum(seconds for event, seconds in callback.waited.items() if event != "on_train_end")
    assert during < 0.25, callback.waited  # 8 steps, 5 logs, 2 evaluations, 2 saves: never waits on the network
    # The only wait: the bounded end-of-training flush (0.5 s here, 10 s by default).
    assert 0.45 < callback.waited["on_train_end"] < 1.0, callback.waited
