"""At most one FailedCreate events list per Job per interval, however often the job is reconciled.

While a Job has fewer pods than ranks, a reconcile asks the API server why (a field-selected events list,
which the API server answers by scanning the namespace's events). A job whose pods are late is reconciled
on every event of its FineTuneJob and Job, not only on its requeue: in a burst of thousands of new Jobs
waiting for the Job controller, that was thousands of scans per second (docs/scaling.md). The interval is
the requeue's (pod_creation.ask_again_after), so a refusal is still named within a second or two of the
apply, and a Job that waits minutes for its pods costs one list per 30 s.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Events = list[dict[str, Any]]

# Answers older than this are dropped even if their Job was never seen again (deleted while short of
# pods): twice the longest interval.
FORGET_AFTER_SECONDS = 60.0


@dataclass
class FailedCreateLookups:
    """The last answer per Job uid and when it was fetched (monotonic seconds)."""

    clock: Callable[[], float] = time.monotonic
    answers: dict[str, tuple[float, Events]] = field(default_factory=dict)
    swept_at: float = 0.0

    async def events(self, uid: str, fetch: Callable[[], Awaitable[Events]], *, fresh_for: float) -> Events:
        """The Job's FailedCreate events: the remembered answer if under `fresh_for` seconds old, else
        `fetch()`'s (remembered in turn)."""
        now = self.clock()
        remembered = self.answers.get(uid)
        if remembered is not None and now - remembered[0] < fresh_for:
            return remembered[1]
        events = await fetch()
        self.answers[uid] = (now, events)
        self._drop_stale(now)
        return events

    def forget(self, uid: str) -> None:
        """The Job has its pods: the next shortfall is asked about afresh."""
        self.answers.pop(uid, None)

    def _drop_stale(self, now: float) -> None:
        # One pass per FORGET_AFTER_SECONDS at most: a pass per fetch would cost as much as the scans
        # this saves.
        if now - self.swept_at < FORGET_AFTER_SECONDS:
            return
        self.swept_at = now
        horizon = now - FORGET_AFTER_SECONDS
        for uid in [uid for uid, (when, _) in self.answers.items() if when < horizon]:
            del self.answers[uid]
