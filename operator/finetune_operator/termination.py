"""What a finished trainer pod says in its termination message (docs/pod-contract.md), read defensively.

The message is written by code in another image and may be cut, garbled or absent (a crash before it
was written leaves the log tail instead): anything that is not the documented shape reads as "nothing".
"""

from __future__ import annotations

import json
import math
from typing import Any

from .builders.env import COMPLETION_INDEX_ANNOTATION
from .names import TRAINER_CONTAINER


def completed_metrics(pods: list[dict[str, Any]]) -> dict[str, float] | None:
    """The final metrics of the succeeded trainer container of rank 0's pod (else any succeeded pod's).

    None when no succeeded trainer container left a message with at least one metric. Only finite
    numbers are kept; bad JSON, non-numbers and NaN/inf are ignored rather than trusted.
    """
    ranked = sorted(pods, key=lambda pod: _completion_index(pod) != "0")
    for pod in ranked:
        message = _succeeded_trainer_message(pod)
        if message is None:
            continue
        metrics = _metrics_of(message)
        if metrics:
            return metrics
    return None


def _completion_index(pod: dict[str, Any]) -> str | None:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return annotations.get(COMPLETION_INDEX_ANNOTATION)


def _succeeded_trainer_message(pod: dict[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if not isinstance(status, dict) or status.get("name") != TRAINER_CONTAINER:
            continue
        terminated = (status.get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode") == 0 and isinstance(terminated.get("message"), str):
            return terminated["message"]
    return None


def _metrics_of(message: str) -> dict[str, float]:
    try:
        body = json.loads(message)
    except (ValueError, RecursionError):  # ValueError: bad JSON, and ints too long to parse
        return {}
    metrics = body.get("metrics") if isinstance(body, dict) else None
    if not isinstance(metrics, dict):
        return {}
    finite = {str(key): _finite_float(value) for key, value in metrics.items()}
    return {key: value for key, value in finite.items() if value is not None}


def _finite_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None
