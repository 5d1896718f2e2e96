"""A trainer's progress report (docs/progress.md): parsed and checked, or refused naming the key (pure)."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_REPORT_BYTES = 16 * 1024
MAX_EVAL_METRICS = 32
METRIC_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
Event = Literal["begin", "interval", "log", "evaluate", "save", "end"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class CheckpointReport(_Strict):
    step: int = Field(ge=0)
    path: str = Field(max_length=1024)


class GpuReport(_Strict):
    count: int = Field(ge=0, le=1024)
    utilizationRatio: float = Field(ge=0.0, le=1.0)  # noqa: N815 (wire names are camelCase)
    memoryUsedBytes: int = Field(ge=0)  # noqa: N815
    memoryTotalBytes: int = Field(ge=0)  # noqa: N815


class ProgressReport(_Strict):
    time: datetime
    event: Event
    step: int = Field(ge=0, le=2**53)
    totalSteps: int = Field(ge=0, le=2**53)  # noqa: N815
    epoch: float | None = Field(default=None, ge=0)
    loss: float | None = None
    learningRate: float | None = Field(default=None, ge=0)  # noqa: N815
    evalMetrics: dict[str, float] = Field(default_factory=dict, max_length=MAX_EVAL_METRICS)  # noqa: N815
    samplesPerSecond: float | None = Field(default=None, ge=0)  # noqa: N815
    tokensPerSecond: float | None = Field(default=None, ge=0)  # noqa: N815
    checkpoint: CheckpointReport | None = None
    gpu: GpuReport | None = None
    firstStepTime: datetime | None = None  # noqa: N815
    pod: str | None = Field(default=None, max_length=253)

    @field_validator("time", "firstStepTime", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> object:
        # Strict mode refuses strings for datetimes; the wire format is an RFC 3339 string.
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{value!r} is not an RFC 3339 time") from None
            if parsed.tzinfo is None:
                raise ValueError(f"{value!r} has no time zone (use e.g. 2026-11-28T12:00:00Z)")
            return parsed
        raise ValueError("must be an RFC 3339 string")

    @field_validator("evalMetrics")
    @classmethod
    def _metric_keys(cls, metrics: dict[str, float]) -> dict[str, float]:
        for key, value in metrics.items():
            if not re.fullmatch(METRIC_KEY_PATTERN, key):
                raise ValueError(f"metric name {key[:70]!r} must match {METRIC_KEY_PATTERN}")
            if not math.isfinite(value):
                raise ValueError(f"metric {key} is not a finite number")
        return metrics


class InvalidReport(ValueError):
    """The body is not a report; the message names the key and what is wrong."""


def parse_report(body: bytes) -> ProgressReport:
    if len(body) > MAX_REPORT_BYTES:
        raise InvalidReport(f"the report is {len(body)} bytes; at most {MAX_REPORT_BYTES} are accepted")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidReport(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidReport("the body must be a JSON object")
    try:
        return ProgressReport.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"]) or "(body)"
        raise InvalidReport(f"{where}: {error['msg'].removeprefix('Value error, ')}") from None
