"""One resource's recent events, from which a watch resumes: the API server's watch cache window.

A client that resumes a watch from a resourceVersion gets every later event of that resource, or 410
Expired when the version is older than the window, and then lists everything again. Upstream
(k8s.io/apiserver, storage/cacher) keeps one window per resource, not one for the whole server: a ring
buffer of at least 100 events, grown (up to 102,400) while its oldest event is younger than 75 s,
`eventFreshDuration`, which is the bookmark interval (60 s) plus a margin, so that a watcher that
saw a bookmark keeps its place. The sandbox keeps what that guarantees: every event of the last 75 s,
at least the last 100, at most the last 102,400. The window used to be 10,000 events across all
resources, so on a busy shared cluster (100,000 foreign pods changing) a FineTuneJob watch resumed
after its 300 s timeout could be expired by other resources' traffic, and the operator relisted every
job: a relist no real server would have asked for (docs/scaling.md).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

FRESH_SECONDS = 75.0  # upstream's eventFreshDuration
LOWER_BOUND = 100  # upstream's defaultLowerBoundCapacity
UPPER_BOUND = 100 * 1024  # upstream's defaultUpperBoundCapacity


class Versioned(Protocol):
    rv: int


E = TypeVar("E", bound=Versioned)


class History(Generic[E]):
    """The window of one resource's events, oldest first."""

    def __init__(
        self,
        *,
        fresh_seconds: float = FRESH_SECONDS,
        lower_bound: int = LOWER_BOUND,
        upper_bound: int = UPPER_BOUND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_seconds = fresh_seconds
        self.upper_bound = upper_bound
        self.lower_bound = min(lower_bound, upper_bound)
        self.clock = clock
        self._events: collections.deque[tuple[float, E]] = collections.deque()
        self.dropped_rv = 0  # the newest resourceVersion no longer in the window

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: E) -> None:
        now = self.clock()
        self._events.append((now, event))
        horizon = now - self.fresh_seconds
        events = self._events
        while len(events) > self.upper_bound or (len(events) > self.lower_bound and events[0][0] < horizon):
            self.dropped_rv = events.popleft()[1].rv

    def expired(self, since: int) -> bool:
        """Whether a watch from `since` would miss events dropped from the window."""
        return since < self.dropped_rv

    def since(self, rv: int) -> Iterator[E]:
        """The events after resourceVersion `rv`, oldest first."""
        later = []
        for _, event in reversed(self._events):
            if event.rv <= rv:
                break
            later.append(event)
        return reversed(later)
