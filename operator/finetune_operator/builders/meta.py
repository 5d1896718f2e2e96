"""Object metadata shared by every child of a FineTuneJob."""

from __future__ import annotations

from typing import Any

from ..names import child_labels


def child_metadata(child_name: str, namespace: str, job_name: str) -> dict[str, Any]:
    return {"name": child_name, "namespace": namespace, "labels": child_labels(job_name)}
