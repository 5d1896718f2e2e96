"""The progress report (docs/progress.md): what rank 0 knows, and the JSON body built from it. Pure.

Every report carries the whole picture known so far (latest loss, latest evaluation, newest
checkpoint), so dropping a report superseded by a newer one loses nothing: the operator keeps only
the latest report anyway. Only finite numbers are reported; a field without one is left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from finetune_trainer.reporting.gpu import GpuSample

# Limits of the report schema (docs/progress.md).
EVAL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_EVAL_METRICS = 32
MAX_POD_NAME = 253
MAX_CHECKPOINT_PATH = 1024
MAX_BODY_BYTES = 16 * 1024
EVENTS = ("begin", "interval", "log", "evaluate", "save", "end")


@dataclass
class ProgressSnapshot:
    """What rank 0 knows about the run; the progress callback keeps it current."""

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


def finite_number(value) -> float | None:
    """A finite float from a logged value (python or 0-d tensor), else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def rfc3339(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Trainer's timings of an evaluation, not metrics of the model.
TIMING_SUFFIXES = ("_runtime", "_per_second", "_model_preparation_time")


def eval_metrics_from(metrics: Mapping | None) -> dict[str, float]:
    """The numeric, finite evaluation results under names the schema admits, eval_loss first.

    `epoch` is left out: Trainer adds it to the evaluation dict, and the report carries it already. So are
    Trainer's timings of the evaluation (`eval_runtime`, `eval_*_per_second`, `eval_model_preparation_time`):
    they say how fast the machine was, not how good the model is, and would crowd out real metrics.
    """
    picked = {}
    for key, value in (metrics or {}).items():
        number = finite_number(value)
        if key == "epoch" or not isinstance(key, str) or key.endswith(TIMING_SUFFIXES):
            continue
        if number is not None and EVAL_KEY.match(key):
            picked[key] = number
    ordered = sorted(picked, key=lambda k: k != "eval_loss")  # stable: keeps the given order otherwise
    return {key: picked[key] for key in ordered[:MAX_EVAL_METRICS]}


def build_report(event: str, snapshot: ProgressSnapshot, *, at: float, gpu: GpuSample | None = None) -> dict:
    """The JSON body of one report: optional keys appear only with valid values."""
    if event not in EVENTS:
        raise ValueError(f"progress event {event!r} is not one of {EVENTS}")
    report = {
        "time": rfc3339(at),
        "event": event,
        "step": max(0, int(snapshot.step)),
        "totalSteps": max(0, int(snapshot.total_steps)),
    }
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
