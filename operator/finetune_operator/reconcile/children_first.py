"""Under a burst of new FineTuneJobs, every run's children are sent before status writes and events.

Children are what the scheduler, Kueue and the kubelet wait for; a status write or an event is not. While
any child creation is pending (or ended a moment ago), status writes and events wait, so the hundredth
job of a burst does not queue behind the first ninety-nine jobs' bookkeeping at the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class ChildrenFirst:
    # A burst's FineTuneJob events reach the handlers over some milliseconds, not at once: the other writes
    # wait until no child creation has been pending for this long.
    QUIET_SECONDS = 0.05

    def __init__(self) -> None:
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_done = float("-inf")

    @contextlib.asynccontextmanager
    async def creating(self) -> AsyncIterator[None]:
        self._pending += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._pending -= 1
            self._last_done = asyncio.get_running_loop().time()
            if not self._pending:
                self._idle.set()

    async def after_children(self) -> None:
        """Return once no child creation is pending or recent (at once when none was for a while)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._idle.wait()
            wait = self._last_done + self.QUIET_SECONDS - loop.time()
            if wait <= 0 and self._idle.is_set():
                return
            await asyncio.sleep(max(wait, 0.001))
