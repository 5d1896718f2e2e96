"""What the operator knows about each job's training progress, in memory (pure: no I/O, no clock).

One `JobRecord` per FineTuneJob feeds both sinks: `progress_status()` renders the status fields and
metrics.py renders the Prometheus series, from the same numbers. A deleted job's record is dropped,
and with it every one of its series.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .report import ProgressReport

# Reports kept to measure the step rate: enough to smooth jitter, few enough to follow speed changes.
RATE_WINDOW = 8
# Evaluations kept per job for a search's early-stopping rule (the status keeps a downsampled copy).
EVALUATIONS_KEPT = 64
MAX_STATUS_EVAL_METRICS = 16


def format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class JobRecord:
    namespace: str
    name: str
    uid: str = ""
    phase: str = "Pending"
    gpus: int = 0
    created: datetime | None = None
    report: ProgressReport | None = None
    received: datetime | None = None
    # (report time, step): the recent history the step rate is measured from.
    samples: deque[tuple[datetime, int]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))
    last_step_change: datetime | None = None
    first_step_time: datetime | None = None
    # The newest checkpoint ever reported, and when it was first seen: later reports may omit it.
    checkpoint: tuple[int, str] | None = None
    checkpoint_time: datetime | None = None
    # GPU-seconds: what earlier runs (and earlier operator lives, via status) used, plus the open interval.
    gpu_seconds: float = 0.0
    running_since: datetime | None = None
    # How much of gpu_seconds the Prometheus counter has already been given.
    gpu_counted: float = 0.0
    stalled: bool = False
    # All four children were sent (created or found) by this operator process.
    children_complete: bool = False
    # The Job completed and the trainer ran to its planned steps (no early stopping): the final report
    # may have been lost while the operator was down, but the step count it would carry is known.
    finished: bool = False
    # For such a job with no report in this operator's life: its stored status.progress, run to the end.
    completed_progress: dict[str, Any] | None = None
    # The FineTuneJob generation the operator last acted on, the spec it first saw (to name what a later
    # change touched) and the digest of a spec change already reported as ignored.
    generation: int | None = None
    spec_seen: dict[str, Any] | None = None
    ignored_spec_hash: str | None = None
    spec_checked_generation: int | None = None
    # A hyperparameter-search trial's record: the FineTuneJob whose status carries it (None for a job).
    parent: str | None = None
    # (step, eval metrics) of each evaluation reported, oldest first: what a search compares trials by.
    evaluations: deque[tuple[int, dict[str, float]]] = field(default_factory=lambda: deque(maxlen=EVALUATIONS_KEPT))
    # A search's FineTuneJob: trials by state, and (metric, value) of the best trial so far.
    trial_counts: dict[str, int] | None = None
    best_objective: tuple[str, float] | None = None

    def accept(self, report: ProgressReport, received: datetime) -> None:
        previous = self.report
        if previous is None or report.step != previous.step:
            self.last_step_change = received
        if previous is not None and report.step < previous.step:
            # A retry resumed from an earlier checkpoint: the old rate says nothing about the new run.
            self.samples.clear()
        self.samples.append((report.time, report.step))
        # Every report repeats the latest evaluation; a new evaluation is an `evaluate` event, or new
        # numbers when that event's own report was lost or throttled.
        if report.evalMetrics and (
            report.event == "evaluate" or previous is None or report.evalMetrics != previous.evalMetrics
        ):
            if self.evaluations and self.evaluations[-1][0] == report.step:
                self.evaluations.pop()
            self.evaluations.append((report.step, dict(report.evalMetrics)))
        self.report = report
        self.received = received
        if report.checkpoint is not None:
            reported = (report.checkpoint.step, report.checkpoint.path)
            if reported != self.checkpoint:
                self.checkpoint, self.checkpoint_time = reported, received
        if report.firstStepTime and self.first_step_time is None:
            self.first_step_time = report.firstStepTime

    def steps_per_second(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, s0), (t1, s1) = self.samples[0], self.samples[-1]
        elapsed = (t1 - t0).total_seconds()
        if elapsed <= 0 or s1 <= s0:
            return None
        return (s1 - s0) / elapsed

    def eta_seconds(self) -> float | None:
        report, rate = self.report, self.steps_per_second()
        if report is None or not report.totalSteps:
            return None
        remaining = max(0, report.totalSteps - report.step)
        if remaining == 0 or self.finished:
            return 0.0
        return remaining / rate if rate else None

    def progress_ratio(self) -> float | None:
        report = self.report
        if report is None or not report.totalSteps:
            return None
        return 1.0 if self.finished else min(1.0, report.step / report.totalSteps)

    # -- GPU-seconds ------------------------------------------------------------------------------

    def running_interval(self, running: bool, now: datetime) -> tuple[datetime | None, float]:
        """(running_since, gpu_seconds) once the running interval is opened or closed at `now` (pure)."""
        if running and self.running_since is None:
            return now, self.gpu_seconds
        if not running and self.running_since is not None:
            return None, self.gpu_seconds + self.gpus * max(0.0, (now - self.running_since).total_seconds())
        return self.running_since, self.gpu_seconds

    def set_running(self, running: bool, now: datetime) -> None:
        """Open or close the running interval."""
        self.running_since, self.gpu_seconds = self.running_interval(running, now)

    def gpu_seconds_at(self, now: datetime) -> float:
        return self.gpu_seconds_with(self.running_since, self.gpu_seconds, now)

    def gpu_seconds_with(self, running_since: datetime | None, gpu_seconds: float, now: datetime) -> float:
        """GPU-seconds at `now` for a running interval and closed total (the record's own, or a plan's)."""
        open_interval = (now - running_since).total_seconds() if running_since else 0.0
        return gpu_seconds + self.gpus * max(0.0, open_interval)

    def update(self, **fields: Any) -> None:
        """Set fields a reconcile plan decided on (`Plan.remember`); an unknown name is a bug."""
        for name, value in fields.items():
            if name not in self.__dataclass_fields__:
                raise AttributeError(f"JobRecord has no field {name!r}")
            setattr(self, name, value)

    # -- stall detection --------------------------------------------------------------------------

    def seconds_without_progress(self, now: datetime, *, running_since: datetime | None) -> float | None:
        """How long a job running since `running_since` (None: not running) has not moved its step
        (or, with no report yet, how long it ran). A plan passes the interval it is about to set."""
        if running_since is None:
            return None
        since = max(filter(None, (self.last_step_change, running_since)))
        return (now - since).total_seconds()


def progress_status(record: JobRecord, now: datetime) -> dict[str, Any]:
    """The status fields the progress path owns: progress, checkpoint, timeToFirstStepSeconds, gpuSeconds."""
    out: dict[str, Any] = {"gpuSeconds": round(record.gpu_seconds_at(now), 1)}
    report = record.report
    if report is None:
        if record.finished and record.completed_progress:
            out["progress"] = record.completed_progress
        return out
    progress: dict[str, Any] = {
        "step": report.step,
        "totalSteps": report.totalSteps,
        "lastReportTime": _stamp(record.received or now),
    }
    if record.finished and report.totalSteps:
        progress["step"] = report.totalSteps
    ratio = record.progress_ratio()
    if ratio is not None:
        progress["percent"] = int(ratio * 100)
    optional = {"epoch": report.epoch, "loss": report.loss, "samplesPerSecond": report.samplesPerSecond}
    progress.update({k: round(v, 6) for k, v in optional.items() if v is not None})
    eval_loss = report.evalMetrics.get("eval_loss")
    if eval_loss is not None:
        progress["evalLoss"] = round(eval_loss, 6)
    others = {k: round(v, 6) for k, v in sorted(report.evalMetrics.items()) if k != "eval_loss"}
    if others:
        progress["evalMetrics"] = dict(list(others.items())[:MAX_STATUS_EVAL_METRICS])
    eta = record.eta_seconds()
    if eta is not None:
        progress["etaSeconds"] = int(eta)
        progress["eta"] = format_eta(eta)
    out["progress"] = progress
    if record.checkpoint is not None:
        step, path = record.checkpoint
        out["checkpoint"] = {"step": step, "path": path, "time": _stamp(record.checkpoint_time or now)}
    if record.first_step_time is not None and record.created is not None:
        out["timeToFirstStepSeconds"] = round(max(0.0, (record.first_step_time - record.created).total_seconds()), 1)
    return out
