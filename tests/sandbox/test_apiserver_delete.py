"""Deletion: finalizers, graceful pod deletion, propagation policies, garbage collection, collections."""

from __future__ import annotations

import asyncio

import pytest
from finetune_sandbox.apiserver import ApiServer
from finetune_sandbox.apiserver.testing import RawClient

CM = "/api/v1/namespaces/default/configmaps"
PODS = "/api/v1/namespaces/default/pods"
JOBS = "/apis/batch/v1/namespaces/default/jobs"


@pytest.fixture
async def http(apiserver):
    async with RawClient(apiserver.url) as client:
        yield client


async def _eventually(check, timeout=3.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def _gone(http, path):
    return (await http.get(path))[0] == 404


def _owned_by(owner, name):
    return {
        "metadata": {
            "name": name,
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
    }


async def test_finalizers_hold_a_deleted_object_until_they_are_removed(http):
    await http.post(CM, {"metadata": {"name": "a", "finalizers": ["example.com/keep"]}})
    status, obj = await http.delete(CM + "/a")
    assert status == 202 and obj["metadata"]["deletionTimestamp"]
    assert obj["metadata"]["deletionGracePeriodSeconds"] == 0
    watch = asyncio.create_task(
        http.watch(CM, {"resourceVersion": obj["metadata"]["resourceVersion"]}, until_type="DELETED")
    )
    status, body = await http.patch(CM + "/a", {"metadata": {"finalizers": ["example.com/keep", "new"]}})
    assert status == 422  # no new finalizers on an object being deleted
    status, _ = await http.patch(CM + "/a", {"metadata": {"finalizers": None}})
    assert status == 200
    events = await asyncio.wait_for(watch, 5)
    assert events[-1]["type"] == "DELETED"
    assert await _gone(http, CM + "/a")


async def test_graceful_pod_deletion_waits_for_the_kubelet():
    server = ApiServer(port=0, graceful_pod_deletion=True)
    async with server, RawClient(server.url) as http:
        pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "node-1", "containers": [{"name": "m", "image": "x"}]}}
        await http.post(PODS, pod)
        status, obj = await http.delete(PODS + "/p")
        assert status == 202 and obj["metadata"]["deletionGracePeriodSeconds"] == 30
        await http.patch(PODS + "/p/status", {"status": {"phase": "Running"}})
        assert (await http.get(PODS + "/p"))[0] == 200
        status, _ = await http.delete(PODS + "/p", {"gracePeriodSeconds": 0})
        assert status == 200 and await _gone(http, PODS + "/p")
        # a pod no node runs goes at once
        await http.post(PODS, {**pod, "spec": {"containers": pod["spec"]["containers"]}})
        assert (await http.delete(PODS + "/p"))[0] == 200


async def test_background_deletion_garbage_collects_dependents(http):
    _, owner = await http.post(CM, {"metadata": {"name": "owner"}})
    await http.post(CM, _owned_by(owner, "child"))
    _, job = await http.post(
        JOBS,
        {
            "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "x"}]}}},
        },
    )
    await http.post(PODS, {**_owned_by(job, "j-pod"), "spec": {"containers": [{"name": "m", "image": "x"}]}})
    await http.delete(CM + "/owner")
    await _eventually(lambda: _gone(http, CM + "/child"))
    await http.delete(JOBS + "/j", {"propagationPolicy": "Background"})
    await _eventually(lambda: _gone(http, PODS + "/j-pod"))


async def test_foreground_deletion_removes_dependents_first(http):
    _, owner = await http.post(CM, {"metadata": {"name": "owner"}})
    await http.post(
        CM,
        {
            **_owned_by(owner, "child"),
            **{"metadata": {**_owned_by(owner, "child")["metadata"], "finalizers": ["example.com/hold"]}},
        },
    )
    status, obj = await http.delete(CM + "/owner", {"propagationPolicy": "Foreground"})
    assert "foregroundDeletion" in obj["metadata"]["finalizers"]
    await _eventually(lambda: _child_terminating(http))
    assert (await http.get(CM + "/owner"))[0] == 200  # waits for the child's finalizer
    await http.patch(CM + "/child", {"metadata": {"finalizers": None}})
    await _eventually(lambda: _gone(http, CM + "/owner"))


async def _child_terminating(http):
    _, child = await http.get(CM + "/child")
    return bool(child.get("metadata", {}).get("deletionTimestamp"))


async def test_orphan_deletion_keeps_dependents_without_the_owner_reference(http):
    _, owner = await http.post(CM, {"metadata": {"name": "owner"}})
    await http.post(CM, _owned_by(owner, "child"))
    await http.delete(CM + "/owner", params={"propagationPolicy": "Orphan"})
    await _eventually(lambda: _gone(http, CM + "/owner"))
    _, child = await http.get(CM + "/child")
    assert "ownerReferences" not in child["metadata"]


async def test_deleting_a_batch_v1_job_without_a_policy_orphans_its_pods_with_a_warning(apiserver, http):
    _, job = await http.post(
        JOBS,
        {
            "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "x"}]}}},
        },
    )
    await http.post(PODS, {**_owned_by(job, "j-pod"), "spec": {"containers": [{"name": "m", "image": "x"}]}})
    async with http.session.delete(apiserver.url + JOBS + "/j") as response:
        assert "child pods are preserved" in response.headers.get("Warning", "")
    await _eventually(lambda: _gone(http, JOBS + "/j"))
    assert (await http.get(PODS + "/j-pod"))[0] == 200


async def test_delete_collection_by_label(http):
    for name, labels in [("a", {"app": "x"}), ("b", {"app": "x"}), ("c", {"app": "y"})]:
        await http.post(CM, {"metadata": {"name": name, "labels": labels}})
    status, body = await http.delete(CM, params={"labelSelector": "app=x"})
    assert status == 200 and sorted(i["metadata"]["name"] for i in body["items"]) == ["a", "b"]
    _, body = await http.get(CM)
    assert [i["metadata"]["name"] for i in body["items"]] == ["c"]


async def test_deleting_a_namespace_deletes_its_content_first(http):
    await http.post("/api/v1/namespaces", {"metadata": {"name": "team"}})
    await http.post("/api/v1/namespaces/team/configmaps", {"metadata": {"name": "a", "finalizers": ["x/y"]}})
    status, ns = await http.delete("/api/v1/namespaces/team")
    assert status == 202 and ns["status"]["phase"] == "Terminating"
    status, body = await http.post("/api/v1/namespaces/team/configmaps", {"metadata": {"name": "b"}})
    assert status == 403
    await http.patch("/api/v1/namespaces/team/configmaps/a", {"metadata": {"finalizers": None}})
    await _eventually(lambda: _gone(http, "/api/v1/namespaces/team"))
