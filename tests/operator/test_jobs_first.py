"""Under a burst, every training Job is sent before the other writes (children.JobsFirst)."""

from __future__ import annotations

import asyncio

from finetune_operator.reconcile.jobs_first import JobsFirst


async def test_other_writes_wait_until_no_job_creation_is_pending_or_recent():
    gate = JobsFirst()
    order: list[str] = []

    async def job(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        async with gate.creating_job():
            await asyncio.sleep(0.01)  # the API call
            order.append(f"job {name}")
        await gate.after_jobs()
        order.append(f"status {name}")

    # The second job's event arrives 20 ms after the first Job was sent: still part of the burst.
    await asyncio.gather(job("a", 0), job("b", 0.02), job("c", 0.04))
    assert order[:3] == ["job a", "job b", "job c"]
    assert sorted(order[3:]) == ["status a", "status b", "status c"]


async def test_with_no_job_creation_in_sight_nothing_waits():
    gate = JobsFirst()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await gate.after_jobs()
    assert loop.time() - start < 0.01
