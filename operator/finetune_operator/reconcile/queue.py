"""Jobs waiting for a reconcile: one entry per job however many events name it, run by a fixed set of workers.

Kopf keeps each event's whole object (a pod, a Job, a FineTuneJob) until its handler returns. A handler
that waited for its reconcile held that object all the while, so 10,000 pods appearing at once (a burst,
or an operator restart listing a big cluster) held 10,000 pods in memory behind a few busy API connections:
1.3 GiB at 10,000 jobs (docs/scaling.md). Handlers now only name the job here and return. A job named
again while it waits is not queued twice: its reconcile reads the newest state when it runs. A job named
while its reconcile runs is queued again, so the change is seen (client-go's workqueue keeps the same rule).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Key = tuple[str, str]


class ReconcileQueue:
    def __init__(self, run: Callable[[Key], Awaitable[None]], workers: int) -> None:
        self._run = run
        self._workers = workers
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._waiting: set[Key] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, namespace: str, name: str) -> None:
        """Queue the job unless it already waits. The workers start on first use, in the caller's context
        (a Kopf handler's: kopf.event() needs its context variables)."""
        if not self._tasks:
            self._tasks = [asyncio.get_running_loop().create_task(self._work()) for _ in range(self._workers)]
        key = (namespace, name)
        if key in self._waiting:
            return
        self._waiting.add(key)
        self._queue.put_nowait(key)

    def waiting(self) -> int:
        return len(self._waiting)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._waiting.discard(key)  # from here on, a new event queues the job again
            await self._run(key)  # reconcile() handles its own failures (retries with backoff)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
