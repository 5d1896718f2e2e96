"""Bookkeeping over status.trials: objective histories, the best trial, counts by state, the default seed (pure)."""

from __future__ import annotations

import hashlib

TRIAL_STATES = {
    "Pending": "pending",
    "Running": "running",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "EarlyStopped": "earlyStopped",
}
MAX_HISTORY_POINTS = 32  # the CRD's maxItems for status.trials[].history


def add_history_point(history: list[dict], step: int, value: float, max_points: int = MAX_HISTORY_POINTS) -> list[dict]:
    """A new history with (step, value) added, sorted by step, at most max_points long.

    A point at an existing step replaces it. Past max_points, the interior point whose removal
    leaves the smallest gap goes, so a long run stays spread evenly over its steps while the first
    and last points are always kept.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2 to keep the first and last point, got {max_points}")
    points = {point["step"]: point["value"] for point in history}
    points[step] = value
    merged = [{"step": s, "value": points[s]} for s in sorted(points)]
    while len(merged) > max_points:
        gaps = [merged[i + 1]["step"] - merged[i - 1]["step"] for i in range(1, len(merged) - 1)]
        del merged[1 + gaps.index(min(gaps))]
    return merged


def best_trial(trials: list[dict], goal: str) -> dict | None:
    """The Succeeded trial with the best objectiveValue (ties: the lowest index), or None."""
    if goal not in ("minimize", "maximize"):
        raise ValueError(f"spec.hyperparameterSearch.objective.goal: {goal!r} is not minimize or maximize")
    scored = [t for t in trials if t.get("state") == "Succeeded" and t.get("objectiveValue") is not None]
    if not scored:
        return None
    sign = 1 if goal == "minimize" else -1
    return min(scored, key=lambda t: (sign * t["objectiveValue"], t["index"]))


def trial_counts(trials: list[dict]) -> dict:
    """status.search.trials: total and one count per state."""
    counts = {"total": len(trials), **{key: 0 for key in TRIAL_STATES.values()}}
    for trial in trials:
        state = trial.get("state")
        if state not in TRIAL_STATES:
            raise ValueError(
                f"status.trials[{trial.get('index')}].state: unknown state {state!r}; "
                f"expected one of {', '.join(TRIAL_STATES)}"
            )
        counts[TRIAL_STATES[state]] += 1
    return counts


def default_seed(uid: str) -> int:
    """A stable seed in 0..2^31-1 from the FineTuneJob's uid, for searches that set none."""
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:4], "big") & 0x7FFFFFFF
