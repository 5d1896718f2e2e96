"""A search pass's events (pure): one per trial that changed state, one for the search's phase."""

from __future__ import annotations

from typing import Any

from .. import reasons as r
from ..reconcile.plan import Event, phase_event


def search_events(previous: dict[str, Any], derived: dict[str, Any], trials: list[dict[str, Any]]) -> list[Event]:
    """An event per trial that changed state, and one for the search's phase."""
    before = {t["name"]: t["state"] for t in previous.get("trials") or []}
    events = []
    for trial in trials:
        state = trial["state"]
        if before.get(trial["name"]) == state:
            continue
        if state == r.TRIAL_EARLY_STOPPED and trial.get("reason") == r.DIVERGED:
            # Not the median's ordinary pruning: the search space holds values that break training.
            message = f"{trial['name']} ({r.DIVERGED}): {trial.get('message', '')}"
            events.append(Event("Warning", r.TRIAL_EARLY_STOPPED_EVENT, message))
        elif state == r.TRIAL_EARLY_STOPPED:
            events.append(Event("Normal", r.TRIAL_EARLY_STOPPED_EVENT, f"{trial['name']}: {trial.get('message', '')}"))
        elif state == r.TRIAL_FAILED:
            message = f"{trial['name']} ({trial.get('reason')}): {trial.get('message', '')}"
            events.append(Event("Warning", r.TRIAL_FAILED_EVENT, message))
        elif state == r.TRIAL_SUCCEEDED:
            message = f"{trial['name']}: objective {trial.get('objectiveValue')}"
            events.append(Event("Normal", r.TRIAL_SUCCEEDED_EVENT, message))
    if derived["phase"] != previous.get("phase"):
        events.append(phase_event(derived))
    return events
