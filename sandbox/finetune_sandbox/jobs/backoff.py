"""The Job controller's queue rate limiter (client-go's ItemExponentialFailureRateLimiter, as job_controller.go
configures it: DefaultJobApiBackOff 1 s, MaxJobApiBackOff 1 min).

A sync that fails (a pod the API server would not create, for one) is retried after 1 s, then 2, 4, 8 ... s, at
most 60 s; a sync that succeeds forgets the failures.
"""

from __future__ import annotations

from collections.abc import Hashable

DEFAULT_JOB_API_BACKOFF = 1.0
MAX_JOB_API_BACKOFF = 60.0


class ItemBackoff:
    def __init__(self, base: float = DEFAULT_JOB_API_BACKOFF, cap: float = MAX_JOB_API_BACKOFF) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        """The delay before retrying `key`, counting this failure."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return min(self.base * 2**failures, self.cap)

    def failures(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)
