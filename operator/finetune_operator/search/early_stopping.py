"""The median stopping rule: stop a running trial whose objective is worse than completed trials' at the same step (pure)."""

from __future__ import annotations

import statistics


def median_stop(
    history: list[dict],
    completed: list[list[dict]],
    *,
    goal: str,
    min_steps: int,
    min_trials: int,
    metric: str,
) -> str | None:
    """Why the running trial should stop, or None to let it run.

    history is the running trial's [{step, value}, ...]; completed holds the histories of Succeeded
    trials. At the running trial's latest step s its best value so far is compared with the median of
    each completed trial's value at its greatest recorded step <= s (evaluation steps of trials need
    not line up). Completed trials with no point at or before s are left out; with fewer than
    min_trials left the rule does not judge.
    """
    if goal not in ("minimize", "maximize"):
        raise ValueError(f"spec.hyperparameterSearch.objective.goal: {goal!r} is not minimize or maximize")
    if not history:
        return None
    step = max(point["step"] for point in history)
    if step < min_steps:
        return None
    values = [point["value"] for point in history]
    best = min(values) if goal == "minimize" else max(values)
    peers = [value for value in (_value_at(other, step) for other in completed) if value is not None]
    if len(peers) < max(1, min_trials):
        return None
    median = statistics.median(peers)
    worse = best > median if goal == "minimize" else best < median
    if not worse:
        return None
    trials = "completed trial" if len(peers) == 1 else "completed trials"
    return (
        f"{metric} {best:.4g} at step {step} is worse than the median {median:.4g} "
        f"of {len(peers)} {trials} at that step"
    )


def _value_at(history: list[dict], step: int) -> float | None:
    """The value at the greatest recorded step <= step, or None when the history starts later."""
    earlier = [point for point in history if point["step"] <= step]
    if not earlier:
        return None
    return max(earlier, key=lambda point: point["step"])["value"]
