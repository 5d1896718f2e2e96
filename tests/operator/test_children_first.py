"""Under a burst, every run's children are sent before status writes and events (ChildrenFirst).

The gate's quiet period is raised to a second here, so the order holds on a loaded machine too: a
stall of the event loop shorter than that cannot reorder the writes.
"""

from __future__ import annotations

import asyncio

from finetune_operator.reconcile.children_first import ChildrenFirst


def gate() -> ChildrenFirst:
    gate = ChildrenFirst()
    gate.QUIET_SECONDS = 1.0
    return gate


async def test_other_writes_wait_until_no_child_creation_is_pending_or_recent():
    children_first = gate()
    order: list[str] = []

    async def run(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        async with children_first.creating():
            await asyncio.sleep(0.01)  # the API calls
            order.append(f"children {name}")
        await children_first.after_children()
        order.append(f"status {name}")

    # The later jobs' events arrive within the quiet period of the first: still part of the burst.
    await asyncio.gather(run("a", 0), run("b", 0.05), run("c", 0.1))
    assert order[:3] == ["children a", "children b", "children c"]
    assert sorted(order[3:]) == ["status a", "status b", "status c"]


async def test_with_no_child_creation_in_sight_nothing_waits():
    children_first = gate()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await children_first.after_children()
    assert loop.time() - start < children_first.QUIET_SECONDS / 2
