"""The promote Job's state, as its conditions say (pure)."""

from __future__ import annotations

from typing import Any

from ..failure import classify_failure
from ..status import Observed


def promote_job_state(observed: Observed) -> tuple[str | None, dict[str, Any] | None]:
    """The promote Job's state (None: not created; active, succeeded, failed) and, failed, why."""
    job = observed.job
    if job is None:
        return None, None
    conditions = {c.get("type"): c.get("status") for c in (job.get("status") or {}).get("conditions") or []}
    if conditions.get("Complete") == "True" or conditions.get("SuccessCriteriaMet") == "True":
        return "succeeded", None
    if conditions.get("Failed") == "True" or conditions.get("FailureTarget") == "True":
        return "failed", classify_failure(job, observed.pods).as_status()
    return "active", None
