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
    judged_through: int | None = None,
    final_step: int | None = None,
) -> str | None:
    """Why the running trial should stop, or None to let it run.

    history is the running trial's [{step, value}, ...]; completed holds the histories of Succeeded
    trials. The rule judges each evaluation: at step s the trial's best value up to s is compared with
    the median of each completed trial's value at its greatest recorded step <= s (evaluation steps of
    trials need not line up). Completed trials with no point at or before s are left out; with fewer than
    min_trials left the rule does not judge that step.

    Every step after judged_through is judged, in order, and the first one behind the median stops the
    trial: reports reach the operator in batches (a trainer reports every few seconds, a search reconciles
    at most once per status interval), and the verdict must not depend on how evaluations were batched.
    Steps up to judged_through were judged by an earlier pass, against the trials completed then.

    Evaluations at or after final_step (the trial's planned steps) are not judged: the trial has done its
    work by then, and stopping it would save nothing and throw a finished run away.
    """
    if goal not in ("minimize", "maximize"):
        raise ValueError(f"spec.hyperparameterSearch.objective.goal: {goal!r} is not minimize or maximize")
    pick = min if goal == "minimize" else max
    best: float | None = None
    for point in sorted(history, key=lambda point: point["step"]):
        step = point["step"]
        if final_step and step >= final_step:
            break
        best = point["value"] if best is None else pick(best, point["value"])
        if step < min_steps or (judged_through is not None and step <= judged_through):
            continue
        why = _behind_median(best, step, completed, goal=goal, min_trials=min_trials, metric=metric)
        if why:
            return why
    return None


def _behind_median(
    best: float, step: int, completed: list[list[dict]], *, goal: str, min_trials: int, metric: str
) -> str | None:
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
