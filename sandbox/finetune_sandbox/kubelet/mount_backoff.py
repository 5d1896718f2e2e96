"""The kubelet's retry back-off for a volume mount that failed (pure: times are passed in, nothing sleeps).

Upstream (kubernetes/kubernetes): the volume manager's reconciler starts each (volume, pod) mount through
pkg/volume/util/nestedpendingoperations, with exponentialBackOffOnError on. Its back-off is
pkg/util/goroutinemap/exponentialbackoff: after the first failure no retry is permitted for
`initialDurationBeforeRetry` (500 ms); every further failure doubles the wait, capped at
`maxDurationBeforeRetry` (2 min 2 s, "slightly offset from 2 minutes to make timeouts due to this constant
recognizable"). A retry is refused while `time.Since(lastErrorTime) <= durationBeforeRetry`; a success deletes
the operation, so a later failure starts again from 500 ms. The reconciler looks every 100 ms; the sandbox
retries exactly when the back-off expires.

While the mounts are not done, the pod's sync waits in WaitForAttachAndMount (pkg/kubelet/volumemanager):
it gives up after `podAttachAndMountTimeout` (2 min 3 s) with a FailedMount event "Unable to attach or mount
volumes: ...", and the pod worker retries the sync after its error back-off (`backOffPeriod`, 10 s, with up
to 50 % jitter: pkg/kubelet/pod_workers.go). The same sync back-off paces a container that failed with
CreateContainerConfigError.

`bench/` may import this to predict what a pod that meets a missing ConfigMap or Secret waits.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

INITIAL_DURATION_BEFORE_RETRY = 0.5
MAX_DURATION_BEFORE_RETRY = 2 * 60 + 2.0
POD_ATTACH_AND_MOUNT_TIMEOUT = 2 * 60 + 3.0
SYNC_BACKOFF_PERIOD = 10.0
SYNC_BACKOFF_JITTER = 0.5
# A timer may fire a hair before its deadline (the event loop's clock resolution): a retry that is due within
# this much counts as due, so the waiter that slept until `retry_at` does not go back to sleep for 0 s.
CLOCK_SLACK = 0.001


def duration_before_retry(
    failures: int, *, initial: float = INITIAL_DURATION_BEFORE_RETRY, maximum: float = MAX_DURATION_BEFORE_RETRY
) -> float:
    """How long no retry is permitted after the `failures`-th consecutive failure (0 before any failure)."""
    if failures < 1:
        return 0.0
    return min(initial * 2.0 ** min(failures - 1, 64), maximum)


def attempt_times(
    count: int, *, initial: float = INITIAL_DURATION_BEFORE_RETRY, maximum: float = MAX_DURATION_BEFORE_RETRY
) -> list[float]:
    """When the first `count` attempts happen, in seconds after the first, if every one of them fails:
    0, 0.5, 1.5, 3.5, 7.5, ... (each gap is the back-off after the failure before it)."""
    times: list[float] = []
    at = 0.0
    for failures in range(count):
        at += duration_before_retry(failures, initial=initial, maximum=maximum)
        times.append(at)
    return times


def mount_time(
    source_ready_at: float,
    *,
    initial: float = INITIAL_DURATION_BEFORE_RETRY,
    maximum: float = MAX_DURATION_BEFORE_RETRY,
) -> float:
    """When the mount succeeds, in seconds after the first attempt, if what it needs exists from
    `source_ready_at` on: the first attempt at or after that moment."""
    for at in _attempts(initial, maximum):
        if at >= source_ready_at:
            return at
    raise AssertionError("unreachable: attempts go on forever")


def _attempts(initial: float, maximum: float) -> Iterator[float]:
    at, failures = 0.0, 0
    while True:
        at += duration_before_retry(failures, initial=initial, maximum=maximum)
        yield at
        failures += 1


def sync_backoff(rng: random.Random, period: float = SYNC_BACKOFF_PERIOD, jitter: float = SYNC_BACKOFF_JITTER) -> float:
    """The pod worker's wait before it syncs a pod again after an error: wait.Jitter(period, jitter)."""
    return period + rng.random() * jitter * period


@dataclass
class ExponentialBackoff:
    """One operation's back-off: its consecutive failures, the last error and when it happened."""

    initial: float = INITIAL_DURATION_BEFORE_RETRY
    maximum: float = MAX_DURATION_BEFORE_RETRY
    failures: int = 0
    last_error: str = ""
    last_error_at: float = 0.0

    @property
    def duration(self) -> float:
        return duration_before_retry(self.failures, initial=self.initial, maximum=self.maximum)

    @property
    def retry_at(self) -> float:
        """The earliest time a retry is permitted."""
        return self.last_error_at + self.duration

    def update(self, error: str, now: float) -> None:
        """Record a failure at `now`: the first waits `initial`, each further one twice the last (capped)."""
        self.failures += 1
        self.last_error, self.last_error_at = error, now

    def safe_to_retry(self, now: float) -> bool:
        return self.failures == 0 or now + CLOCK_SLACK >= self.retry_at


@dataclass
class MountBackoffs:
    """The back-offs of one pod's volume mounts, by volume name (nestedpendingoperations' operations)."""

    initial: float = INITIAL_DURATION_BEFORE_RETRY
    maximum: float = MAX_DURATION_BEFORE_RETRY
    operations: dict[str, ExponentialBackoff] = field(default_factory=dict)

    def failed(self, volume: str, error: str, now: float) -> ExponentialBackoff:
        backoff = self.operations.setdefault(volume, ExponentialBackoff(self.initial, self.maximum))
        backoff.update(error, now)
        return backoff

    def succeeded(self, volume: str) -> None:
        """A mount that worked forgets its back-off (the operation is deleted)."""
        self.operations.pop(volume, None)

    def safe_to_retry(self, volume: str, now: float) -> bool:
        backoff = self.operations.get(volume)
        return backoff is None or backoff.safe_to_retry(now)

    def next_retry_at(self, volumes: list[str] | None = None) -> float | None:
        """The earliest moment one of `volumes` (default: all in back-off) may be retried; None if none waits."""
        names = self.operations if volumes is None else [v for v in volumes if v in self.operations]
        times = [self.operations[name].retry_at for name in names]
        return min(times) if times else None
