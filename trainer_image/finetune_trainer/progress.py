"""Progress reports from rank 0 to the operator (docs/progress.md), sent by a background thread.

Shaped like transformers' TensorBoardCallback: acts on the main process only, sets up lazily, reports
numbers only and never raises into training. Every report carries the whole picture known so far
(latest loss, latest evaluation, newest checkpoint), so dropping a report superseded by a newer one
loses nothing: the operator keeps only the latest report anyway.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from transformers import TrainerCallback

from finetune_trainer.gpu import GpuSample, GpuSampler
from finetune_trainer.trainer_metrics import (
    DEFAULT_METRICS_PORT,
    ThroughputMeter,
    TrainerMetrics,
    TrainerMetricsCallback,
    finite_number,
    samples_per_step,
    serve,
)

logger = logging.getLogger("finetune_trainer")

ENV_URL = "FINETUNE_PROGRESS_URL"
ENV_TOKEN_FILE = "FINETUNE_PROGRESS_TOKEN_FILE"
ENV_INTERVAL = "FINETUNE_PROGRESS_INTERVAL_SECONDS"
ENV_METRICS_PORT = "FINETUNE_METRICS_PORT"
DEFAULT_INTERVAL_SECONDS = 10.0
FLUSH_SECONDS = 10.0  # how long the end of training waits for the final report
REQUEST_TIMEOUT_SECONDS = 5.0
MIN_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 0.5, 30.0

# Limits of the report schema (docs/progress.md).
EVAL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_EVAL_METRICS = 32
MAX_POD_NAME = 253
MAX_CHECKPOINT_PATH = 1024
MAX_BODY_BYTES = 16 * 1024
EVENTS = ("begin", "interval", "log", "evaluate", "save", "end")


# ---- the report (pure) ----

@dataclass
class ProgressSnapshot:
    """What rank 0 knows about the run; the callback keeps it current."""

    step: int = 0
    total_steps: int = 0
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)
    samples_per_second: float | None = None
    tokens_per_second: float | None = None
    checkpoint: tuple[int, str] | None = None  # (step, folder)
    first_step_time: float | None = None  # Unix time
    pod: str | None = None


def rfc3339(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def eval_metrics_from(metrics: Mapping | None) -> dict[str, float]:
    """The numeric, finite evaluation results under names the schema admits, eval_loss first. Pure.

    `epoch` is left out: Trainer adds it to the evaluation dict, and the report carries it already.
    """
    picked = {}
    for key, value in (metrics or {}).items():
        number = finite_number(value)
        if key != "epoch" and number is not None and isinstance(key, str) and EVAL_KEY.match(key):
            picked[key] = number
    ordered = sorted(picked, key=lambda k: k != "eval_loss")  # stable: keeps the given order otherwise
    return {key: picked[key] for key in ordered[:MAX_EVAL_METRICS]}


def build_report(event: str, snapshot: ProgressSnapshot, *, at: float, gpu: GpuSample | None = None) -> dict:
    """The JSON body of one report (docs/progress.md): optional keys appear only with valid values. Pure."""
    if event not in EVENTS:
        raise ValueError(f"progress event {event!r} is not one of {EVENTS}")
    report = {"time": rfc3339(at), "event": event, "step": max(0, int(snapshot.step)), "totalSteps": max(0, int(snapshot.total_steps))}
    _put(report, "epoch", snapshot.epoch, minimum=0.0)
    _put(report, "loss", snapshot.loss)
    _put(report, "learningRate", snapshot.learning_rate, minimum=0.0)
    if snapshot.eval_metrics:
        report["evalMetrics"] = eval_metrics_from(snapshot.eval_metrics)
    _put(report, "samplesPerSecond", snapshot.samples_per_second, minimum=0.0)
    _put(report, "tokensPerSecond", snapshot.tokens_per_second, minimum=0.0)
    if snapshot.checkpoint is not None and len(snapshot.checkpoint[1]) <= MAX_CHECKPOINT_PATH:
        # A truncated path would name the wrong folder: better no checkpoint than a wrong one.
        report["checkpoint"] = {"step": int(snapshot.checkpoint[0]), "path": snapshot.checkpoint[1]}
    if gpu is not None:
        report["gpu"] = gpu.as_report()
    if snapshot.first_step_time is not None:
        report["firstStepTime"] = rfc3339(snapshot.first_step_time)
    if snapshot.pod:
        report["pod"] = snapshot.pod[:MAX_POD_NAME]
    return report


def _put(report: dict, key: str, value, minimum: float | None = None) -> None:
    number = finite_number(value)
    if number is not None and (minimum is None or number >= minimum):
        report[key] = number


# ---- sending (a thread; training never waits for it) ----

class ReportSender:
    """POSTs the newest submitted report; retries with backoff; a newer report replaces a waiting one.

    Outcomes per answer: 2xx sent; connection errors, timeouts, 429 and 5xx retried with exponential
    backoff (Retry-After honoured up to the cap); 401/403 re-read the token file (it may have been
    rotated) and retry; any other 4xx drops the report, logged once per status.
    """

    def __init__(
        self,
        url: str,
        token_file: str | None = None,
        *,
        metrics: TrainerMetrics | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        min_backoff: float = MIN_BACKOFF_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
    ):
        self.url = url
        self.token_file = token_file
        self.metrics = metrics
        self.timeout = timeout
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self._cond = threading.Condition()
        self._pending: dict | None = None
        self._in_flight = False
        self._wake = False
        self._thread: threading.Thread | None = None
        self._token: str | None = None
        self._token_read = False
        self._logged: set[str] = set()
        self.superseded = 0  # reports replaced before they were sent

    def submit(self, report: dict) -> None:
        with self._cond:
            if self._pending is not None:
                self.superseded += 1
            self._pending = report
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="finetune-progress", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s until nothing is left to send; a backoff in progress is cut short once."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._pending is None and not self._in_flight, timeout)

    def _run(self) -> None:
        delay = self.min_backoff
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None)
                report, self._pending, self._in_flight = self._pending, None, True
            try:
                outcome, retry_after = self._deliver(report)
            except Exception:  # a bug here must not end the thread: later reports still matter
                self._log_once("crash", logging.ERROR, "progress sender failed unexpectedly", exc_info=True)
                outcome, retry_after = "retry", None
            with self._cond:
                self._in_flight = False
                if outcome == "retry" and self._pending is None:
                    self._pending = report  # retried unless a newer report superseded it
                self._cond.notify_all()
                if outcome != "retry":
                    delay = self.min_backoff
                    continue
                wait = min(self.max_backoff, max(delay, retry_after or 0.0))
                self._cond.wait_for(lambda: self._wake, wait)
                self._wake = False
                delay = min(self.max_backoff, delay * 2)

    def _deliver(self, report: dict) -> tuple[str, float | None]:
        """One POST: ("sent" | "retry" | "drop", Retry-After seconds or None)."""
        body = json.dumps(report, allow_nan=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        token = self._read_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status, detail, retry_after = error.code, _error_text(error), _retry_after(error.headers)
        except (OSError, http.client.HTTPException) as error:  # refused, reset, DNS, timeout
            self._failed()
            self._log_once("connection", logging.WARNING, "progress report not delivered to %s: %s (retrying with backoff)", self.url, error)
            return "retry", None
        else:
            if 200 <= status < 300:
                if self.metrics is not None:
                    self.metrics.reports_sent.inc()
                return "sent", None
            detail, retry_after = "", None
        self._failed()
        if status in (401, 403):
            self._token_read = False  # the mounted Secret may have been rotated
            self._log_once(f"http-{status}", logging.WARNING, "progress endpoint answered %s (%s); re-reading %s and retrying", status, detail, self.token_file)
            return "retry", retry_after
        if status == 429 or status >= 500:
            self._log_once(f"http-{status}", logging.WARNING, "progress endpoint answered %s (%s); retrying with backoff", status, detail)
            return "retry", retry_after
        self._log_once(f"http-{status}", logging.WARNING, "progress endpoint answered %s (%s); report dropped, later reports still sent", status, detail)
        return "drop", None

    def _read_token(self) -> str | None:
        if not self._token_read:
            self._token_read = True
            self._token = None
            if self.token_file:
                try:
                    with open(self.token_file) as f:
                        self._token = f.read().strip() or None
                except OSError as error:
                    self._log_once("token", logging.WARNING, "cannot read the progress token from %s (%s): sending without one", self.token_file, error)
        return self._token

    def _failed(self) -> None:
        if self.metrics is not None:
            self.metrics.reports_failed.inc()

    def _log_once(self, key: str, level: int, message: str, *args, exc_info: bool = False) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.log(level, message, *args, exc_info=exc_info)


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        return error.read(300).decode(errors="replace").strip() or error.reason
    except Exception:
        return str(error.reason)


def _retry_after(headers) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError, AttributeError):
        return None


# ---- the callback ----

class ProgressCallback(TrainerCallback):
    """Reports rank 0's progress: at begin, evaluate, save and end, and at most once per interval
    from on_log/on_step_end. Never raises into training and never blocks it, except for up to
    `flush_seconds` at the end of training so the final report lands."""

    def __init__(
        self,
        sender: ReportSender,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        *,
        pod: str | None = None,
        gpu: GpuSampler | None = None,
        flush_seconds: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.sender = sender
        self.interval_seconds = interval_seconds
        self.flush_seconds = flush_seconds
        self.gpu = gpu
        self.snapshot = ProgressSnapshot(pod=pod)
        self.meter = ThroughputMeter()
        self._clock, self._wall_clock = clock, wall_clock
        self._last_report: float | None = None
        self._failed = False

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._safely(lambda: self._report("begin", state))

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return

        def step():
            self.meter.record(self._clock(), state.global_step, state.num_input_tokens_seen or 0, samples_per_step(args))
            if self.snapshot.first_step_time is None and state.global_step > 0:
                self.snapshot.first_step_time = self._wall_clock()
            # When a log follows at this step, let on_log report: it carries the fresh loss.
            if self._due() and not control.should_log:
                self._report("interval", state)

        self._safely(step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return

        def log():
            logs_ = logs or {}
            if finite_number(logs_.get("loss")) is not None:
                self.snapshot.loss = finite_number(logs_["loss"])
            if finite_number(logs_.get("learning_rate")) is not None:
                self.snapshot.learning_rate = finite_number(logs_["learning_rate"])
            if self._due():
                self._report("log", state)

        self._safely(log)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.meter.restart()  # evaluation time is not training time
        if not state.is_world_process_zero:
            return

        def evaluate():
            self.snapshot.eval_metrics = eval_metrics_from(metrics)
            self._report("evaluate", state)

        self._safely(evaluate)

    def on_save(self, args, state, control, **kwargs):
        self.meter.restart()
        if not state.is_world_process_zero:
            return

        def save():
            # Trainer writes OUTPUT_DIR/checkpoint-STEP; callbacks registered before this one (the
            # COMPLETE marker) have run, so the folder is whole by now.
            folder = os.path.abspath(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
            if os.path.isdir(folder):
                self.snapshot.checkpoint = (state.global_step, folder)
            self._report("save", state)

        self._safely(save)

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return

        def end():
            self._report("end", state)
            if not self.sender.flush(self.flush_seconds):
                logger.warning("final progress report not delivered within %.0f s; training goes on without it", self.flush_seconds)

        self._safely(end)

    def _due(self) -> bool:
        return self._last_report is None or self._clock() - self._last_report >= self.interval_seconds

    def _report(self, event: str, state) -> None:
        snapshot = self.snapshot
        snapshot.step, snapshot.total_steps, snapshot.epoch = state.global_step, state.max_steps, state.epoch
        snapshot.samples_per_second, snapshot.tokens_per_second = self.meter.samples_per_second, self.meter.tokens_per_second
        gpu = self.gpu.sample() if self.gpu is not None else None
        report = build_report(event, snapshot, at=self._wall_clock(), gpu=gpu)
        self._last_report = self._clock()
        self.sender.submit(report)

    def _safely(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:
            if not self._failed:
                logger.exception("progress reporting failed (training continues; logged once)")
            self._failed = True


# ---- assembly (called from run.py) ----

def progress_callbacks(environ: Mapping[str, str] | None = None) -> list[TrainerCallback]:
    """The trainer's metrics callback (every rank) and, when FINETUNE_PROGRESS_URL is set, the progress
    reporter (acting on world rank 0 only). Starts the trainer /metrics server on FINETUNE_METRICS_PORT
    (default 9400, 0 disables) in the first process of the pod (LOCAL_RANK unset or 0): the other local
    processes would find the port taken. Append these after CompleteCheckpointCallback."""
    environ = os.environ if environ is None else environ
    gpu = GpuSampler(environ=environ)
    metrics = TrainerMetrics(gpu=gpu)
    server = None
    if environ.get("LOCAL_RANK", "0") == "0":
        server = serve(metrics, _env_number(environ, ENV_METRICS_PORT, DEFAULT_METRICS_PORT, int, example="9400"))
    callbacks: list[TrainerCallback] = [TrainerMetricsCallback(metrics, server=server)]

    url = environ.get(ENV_URL, "").strip()
    if url and not url.startswith(("http://", "https://")):
        logger.warning("%s=%r is not an http(s) URL (e.g. http://finetune-operator.finetune-system.svc:8081/progress/v1/...): progress not reported", ENV_URL, url)
    elif url:
        interval = max(0.0, _env_number(environ, ENV_INTERVAL, DEFAULT_INTERVAL_SECONDS, float, example="10"))
        sender = ReportSender(url, environ.get(ENV_TOKEN_FILE) or None, metrics=metrics)
        callbacks.append(ProgressCallback(sender, interval, pod=environ.get("HOSTNAME") or None, gpu=gpu))
    return callbacks


def _env_number(environ: Mapping[str, str], name: str, default, kind, *, example: str):
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
        if not math.isfinite(value) or value < 0:
            raise ValueError
        return value
    except ValueError:
        logger.warning("%s=%r is not a non-negative %s (e.g. %s); using %s", name, raw, kind.__name__, example, default)
        return default
