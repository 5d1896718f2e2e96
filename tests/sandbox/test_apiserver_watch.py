"""Watch semantics: replay, resume from a resourceVersion, 410 Gone, bookmarks, timeouts, selectors."""

from __future__ import annotations

import asyncio

import pytest
from finetune_sandbox.apiserver import ApiServer
from finetune_sandbox.apiserver.testing import RawClient

CM = "/api/v1/namespaces/default/configmaps"


@pytest.fixture
async def http(apiserver):
    async with RawClient(apiserver.url) as client:
        yield client


async def _later(coro, delay=0.1):
    await asyncio.sleep(delay)
    return await coro


async def test_watch_without_resource_version_replays_state_then_streams(http):
    await http.post(CM, {"metadata": {"name": "a"}})
    watch = asyncio.create_task(http.watch(CM, max_events=4))
    await asyncio.sleep(0.1)
    await http.post(CM, {"metadata": {"name": "b"}})
    await http.patch(CM + "/b", {"data": {"k": "v"}})
    await http.delete(CM + "/a")
    events = await asyncio.wait_for(watch, 5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "b"),
        ("DELETED", "a"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events[1:]]
    assert rvs == sorted(rvs)


async def test_watch_from_a_resource_version_sends_every_later_change(http):
    _, first = await http.post(CM, {"metadata": {"name": "a"}})
    await http.patch(CM + "/a", {"data": {"k": "1"}})
    await http.post(CM, {"metadata": {"name": "b"}})
    events = await http.watch(CM, {"resourceVersion": first["metadata"]["resourceVersion"], "timeoutSeconds": "1"})
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("MODIFIED", "a"), ("ADDED", "b")]


async def test_watch_from_a_compacted_resource_version_gets_410_expired():
    server = ApiServer(port=0, history_size=5, graceful_pod_deletion=False)
    url = await server.start()
    try:
        async with RawClient(url) as http:
            for n in range(10):
                await http.post(CM, {"metadata": {"name": f"c{n}"}})
            for too_old_or_new in ("3", "1000"):
                events = await http.watch(CM, {"resourceVersion": too_old_or_new})
                assert len(events) == 1 and events[0]["type"] == "ERROR"
                status = events[0]["object"]
                assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    finally:
        await server.stop()


async def test_bookmarks_carry_the_latest_resource_version_and_timeout_closes(apiserver, http):
    await http.post(CM, {"metadata": {"name": "a"}})
    loop = asyncio.get_running_loop()
    started = loop.time()
    events = await http.watch(
        CM,
        {
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "1",
            "resourceVersion": str(apiserver.store.resource_version),
        },
    )
    assert 0.8 < loop.time() - started < 3
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and all(set(b["object"]["metadata"]) == {"resourceVersion"} for b in bookmarks)
    assert bookmarks[-1]["object"]["metadata"]["resourceVersion"] == str(apiserver.store.resource_version)


async def test_watch_selectors_turn_label_changes_into_added_and_deleted(http):
    await http.post(CM, {"metadata": {"name": "a", "labels": {"app": "x"}}})
    watch = asyncio.create_task(http.watch(CM, {"labelSelector": "app=x"}, max_events=3))
    await asyncio.sleep(0.1)
    await http.post(CM, {"metadata": {"name": "other"}})
    await http.patch(CM + "/a", {"metadata": {"labels": {"app": "y"}}})
    await http.patch(CM + "/a", {"metadata": {"labels": {"app": "x"}}})
    events = await asyncio.wait_for(watch, 5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("DELETED", "a"),
        ("ADDED", "a"),
    ]


async def test_legacy_watch_paths_and_field_selected_single_objects(http):
    await http.post(CM, {"metadata": {"name": "a"}})
    await http.post(CM, {"metadata": {"name": "b"}})
    events = await http.watch("/api/v1/watch/namespaces/default/configmaps/b", {"timeoutSeconds": "1"})
    assert [e["object"]["metadata"]["name"] for e in events] == ["b"]
    events = await http.watch("/api/v1/configmaps", {"fieldSelector": "metadata.name=a", "timeoutSeconds": "1"})
    assert [e["object"]["metadata"]["name"] for e in events] == ["a"]


async def test_watch_list_ends_initial_events_with_a_marked_bookmark(http):
    await http.post(CM, {"metadata": {"name": "a"}})
    events = await http.watch(
        CM,
        {"sendInitialEvents": "true", "allowWatchBookmarks": "true", "resourceVersionMatch": "NotOlderThan"},
        until_type="BOOKMARK",
    )
    assert events[0]["type"] == "ADDED"
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_stopping_the_server_ends_open_watches(apiserver, http):
    watch = asyncio.create_task(http.watch(CM))
    await asyncio.sleep(0.1)
    await asyncio.wait_for(apiserver.stop(), 5)
    assert await asyncio.wait_for(watch, 5) == []
