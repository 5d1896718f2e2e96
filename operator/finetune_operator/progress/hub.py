"""Where progress reports land: per-job tokens, report intake, and the throttled status.progress writes.

The reconcile registers each job it sees in the JobRegistry; the progress endpoint hands over
authenticated reports (`accept`) to those records; every accepted report schedules one status write per
job per `status_interval` at most (trailing edge, so the newest report always lands within one interval).
A job has at most one write waiting or in flight: when the API server answers slower than reports come
(10,000 jobs ask for 667 writes a second), writes wait for their job's previous one instead of piling up
in memory, and each carries the newest report when it goes.
This is the one writer of the fields `progress_status` renders (status.progress, checkpoint,
timeToFirstStepSeconds, gpuSeconds): the reconcile asks for a write (`schedule_write`), it never writes
them itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ..metrics import OperatorMetrics
from ..registry import JobRegistry
from .records import progress_status
from .report import ProgressReport

log = logging.getLogger(__name__)


def job_token(key: bytes, namespace: str, name: str, uid: str) -> str:
    """A job's bearer token: unguessable without the operator's key, checkable without reading Secrets."""
    return hmac.new(key, f"{namespace}/{name}/{uid}".encode(), hashlib.sha256).hexdigest()


class ProgressHub:
    def __init__(
        self,
        key: bytes,
        registry: JobRegistry,
        write_status: Callable[[str, str, dict[str, Any]], None],
        metrics: OperatorMetrics,
        *,
        status_interval: float,
        clock: Callable[[], datetime],
        trial_reported: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self._key = key
        self.registry = registry
        self._write_status = write_status
        self.metrics = metrics
        self.status_interval = status_interval
        self._clock = clock
        self._last_write: dict[tuple[str, str], float] = {}
        self._pending: dict[tuple[str, str], asyncio.Task[None]] = {}
        # Jobs whose write is in flight (its fields already taken), and those that got a report meanwhile.
        self._in_flight: set[tuple[str, str]] = set()
        self._dirty: set[tuple[str, str]] = set()
        # A search trial's reports go to its FineTuneJob's reconcile (which owns status.trials), not to a
        # status write of their own.
        self.trial_reported = trial_reported

    def token(self, namespace: str, name: str, uid: str) -> str:
        return job_token(self._key, namespace, name, uid)

    def forget(self, keys: list[tuple[str, str]]) -> None:
        """Cancel the pending writes of deleted jobs (JobRegistry.forget names them)."""
        for key in keys:
            self._last_write.pop(key, None)
            self._dirty.discard(key)
            task = self._pending.pop(key, None)
            if task is not None:
                task.cancel()

    def accept(self, namespace: str, name: str, token: str, report: ProgressReport) -> tuple[int, str]:
        """(HTTP status, reason) for one report; 204 when taken."""
        record = self.registry.get(namespace, name)
        if record is None:
            return 404, "UnknownJob"
        if not hmac.compare_digest(token.encode(), self.token(namespace, name, record.uid).encode()):
            return 403, "WrongToken"
        had_first_step = record.first_step_time is not None
        record.accept(report, self._clock())
        if not had_first_step and record.first_step_time is not None and record.created is not None:
            self.metrics.time_to_first_step.observe(max(0.0, (record.first_step_time - record.created).total_seconds()))
        self.schedule_write(namespace, name)
        return 204, "Accepted"

    def schedule_write(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key in self._pending:
            if key in self._in_flight:
                self._dirty.add(key)  # written again once the write in flight is answered
            return
        elapsed = time.monotonic() - self._last_write.get(key, float("-inf"))
        delay = max(0.0, self.status_interval - elapsed)
        self._pending[key] = asyncio.get_running_loop().create_task(self._write_after(key, delay))

    async def _write_after(self, key: tuple[str, str], delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            await self._write(key)
        finally:
            self._in_flight.discard(key)
            if self._pending.get(key) is asyncio.current_task():
                del self._pending[key]
            if key in self._dirty:
                self._dirty.discard(key)
                self.schedule_write(*key)

    async def _write(self, key: tuple[str, str]) -> None:
        record = self.registry.records.get(key)
        if record is None:
            return
        self._last_write[key] = time.monotonic()
        self._in_flight.add(key)
        if record.parent is not None:
            if self.trial_reported is not None:
                try:
                    await self.trial_reported(record.namespace, record.parent)
                except Exception:  # noqa: BLE001 (the periodic sweep reconciles the search again)
                    log.warning(
                        "reconciling search %s/%s after a trial report failed",
                        record.namespace,
                        record.parent,
                        exc_info=True,
                    )
            return
        fields = progress_status(record, self._clock())
        # Counted as sent, before the answer: a write still in flight when its job is deleted reached the
        # API server all the same.
        self.metrics.status_writes.labels("progress").inc()
        try:
            await asyncio.to_thread(self._write_status, *key, fields)
        except Exception:  # noqa: BLE001 (the next report or reconcile retries; training must not notice)
            log.exception("writing progress of %s/%s failed; will retry", *key)
            self.metrics.reconcile_errors.inc()
            self._dirty.add(key)

    async def close(self) -> None:
        for task in self._pending.values():
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)
        self._pending.clear()
