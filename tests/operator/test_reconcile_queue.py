"""The reconcile queue (reconcile/queue.py): one waiting entry per job, a fixed set of workers."""

from __future__ import annotations

import asyncio
import contextvars

from finetune_operator.reconcile.queue import ReconcileQueue


async def test_a_job_named_many_times_while_it_waits_is_reconciled_once() -> None:
    ran: list[tuple[str, str]] = []
    gate = asyncio.Event()

    async def run(key: tuple[str, str]) -> None:
        await gate.wait()
        ran.append(key)

    queue = ReconcileQueue(run, workers=1)
    try:
        queue.add("ns", "busy")  # taken by the only worker, which waits at the gate
        await asyncio.sleep(0.01)
        for _ in range(1000):
            queue.add("ns", "a")
            queue.add("ns", "b")
        assert queue.waiting() == 2
        gate.set()
        for _ in range(100):
            if len(ran) == 3:
                break
            await asyncio.sleep(0.01)
        assert ran == [("ns", "busy"), ("ns", "a"), ("ns", "b")]
    finally:
        await queue.close()


async def test_a_job_named_while_its_reconcile_runs_is_reconciled_again() -> None:
    runs = 0
    running, finish = asyncio.Event(), asyncio.Event()

    async def run(_key: tuple[str, str]) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            running.set()
            await finish.wait()

    queue = ReconcileQueue(run, workers=2)
    try:
        queue.add("ns", "a")
        await running.wait()
        queue.add("ns", "a")  # a change the running reconcile may have missed
        finish.set()
        for _ in range(100):
            if runs == 2:
                break
            await asyncio.sleep(0.01)
        assert runs == 2
    finally:
        await queue.close()


async def test_no_more_reconciles_run_at_once_than_there_are_workers() -> None:
    active = peak = 0

    async def run(_key: tuple[str, str]) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1

    queue = ReconcileQueue(run, workers=4)
    try:
        for i in range(100):
            queue.add("ns", f"job-{i}")
        for _ in range(500):
            if queue.waiting() == 0 and active == 0:
                break
            await asyncio.sleep(0.01)
        assert peak == 4 and queue.waiting() == 0
    finally:
        await queue.close()


HANDLER = contextvars.ContextVar("handler", default=None)


async def test_workers_run_in_the_context_of_the_handler_that_first_queued() -> None:
    # kopf.event() reads Kopf's context variables: workers must carry a handler's.
    seen: list[object] = []

    async def run(_key: tuple[str, str]) -> None:
        seen.append(HANDLER.get())

    queue = ReconcileQueue(run, workers=1)
    try:

        async def handler() -> None:
            HANDLER.set("kopf handler")
            queue.add("ns", "a")

        await asyncio.create_task(handler())
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == ["kopf handler"]
    finally:
        await queue.close()
