"""Divergence: stop a trial whose loss is not finite or far above its own start (pure).

The median rule needs completed peers (`minTrials`), so the first trials of a search are never judged by
it; a trial whose learning rate blows its loss up would run to the end. This rule needs no peer: it
compares a trial with itself.
"""

from __future__ import annotations

import math

# "Far above its start": more than FACTOR times the first reported loss and at least MARGIN above it. The
# first evaluation is normally the trainer's evaluation of the untrained model at step 0 (chance level for a
# fresh classification head, ln 2 = 0.69 for two labels): three times chance is a model made worse than
# untrained, not an overfitting one. The margin keeps a start that is already small (an operator restarted
# mid-trial sees a later evaluation first) from turning ordinary overfitting (0.05 -> 0.2) into a verdict.
FACTOR = 3.0
MARGIN = 1.0


def judged_loss(objective_metric: str) -> str:
    """The loss the rule judges: the objective when it is a loss, else the trainer's eval_loss."""
    return objective_metric if "loss" in objective_metric else "eval_loss"


def diverged(evaluations: list[tuple[int, dict[str, float]]], loss: str, *, final_step: int | None) -> str | None:
    """Why the trial has diverged, or None.

    evaluations are the trial's (step, eval metrics) as reported, oldest first. The trainer reports only
    finite numbers, so a loss that is NaN or infinite shows as an evaluation that carries other metrics of
    its kind (`eval_accuracy` without `eval_loss`) after the loss was reported before; an evaluation under
    another prefix (`retention_*`, the retention set's) says nothing about it. Evaluations at or after
    final_step are not judged: stopping a trial there saves nothing and loses a finished run.
    """
    prefix = loss.split("_", 1)[0] + "_" if "_" in loss else loss
    start: tuple[int, float] | None = None
    for step, metrics in sorted(evaluations, key=lambda evaluation: evaluation[0]):
        if final_step and step >= final_step:
            break
        value = metrics.get(loss)
        if value is None or not math.isfinite(value):
            same_kind = value is not None or any(key.startswith(prefix) for key in metrics)
            if start is not None and same_kind:
                return (
                    f"{loss} is not a finite number at step {step} (it was {start[1]:.4g} at step {start[0]}): "
                    "the training diverged; lower the learning rate or its range"
                )
            continue
        if start is None:
            start = (step, value)
        elif value > threshold(start[1]):
            return (
                f"{loss} {value:.4g} at step {step} is far above its start {start[1]:.4g} at step {start[0]} "
                f"(more than {FACTOR:g}x and {MARGIN:g} higher): the training diverged; lower the learning rate "
                "or its range"
            )
    return None


def threshold(start: float) -> float:
    """The loss above which a trial that started at `start` has diverged."""
    return max(FACTOR * start, start + MARGIN)
