"""Create/get/list/update/patch semantics of the sandbox API server, over plain HTTP."""

from __future__ import annotations

import aiohttp
import pytest
from finetune_sandbox.apiserver.testing import RawClient

CM = "/api/v1/namespaces/default/configmaps"
PODS = "/api/v1/namespaces/default/pods"


@pytest.fixture
async def http(apiserver):
    async with RawClient(apiserver.url) as client:
        yield client


def _pod(name, labels=None, **spec):
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec},
    }


async def test_create_assigns_identity_generation_and_increasing_resource_versions(http):
    status, first = await http.post(CM, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    assert status == 201
    _, second = await http.post(CM, {"metadata": {"generateName": "gen-"}})
    meta = first["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    assert first["kind"] == "ConfigMap" and first["apiVersion"] == "v1"
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert second["metadata"]["name"].startswith("gen-") and len(second["metadata"]["name"]) == 9


async def test_create_rejects_duplicates_missing_namespaces_and_bad_names(http):
    await http.post(CM, {"metadata": {"name": "a"}})
    status, body = await http.post(CM, {"metadata": {"name": "a"}})
    assert (status, body["reason"], body["kind"], body["status"]) == (409, "AlreadyExists", "Status", "Failure")
    status, body = await http.post("/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "a"}})
    assert (status, body["reason"]) == (404, "NotFound")
    status, body = await http.post(CM, {"metadata": {"name": "Bad_Name"}})
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"


async def test_unknown_paths_and_methods_answer_with_status_objects(http):
    status, body = await http.get("/api/v1/namespaces/default/widgets")
    assert (status, body["kind"], body["code"]) == (404, "Status", 404)
    status, body = await http.get(CM + "/missing")
    assert (status, body["reason"], body["details"]["name"]) == (404, "NotFound", "missing")
    status, body = await http.request("PATCH", CM)
    assert (status, body["reason"]) == (405, "MethodNotAllowed")
    await http.post(CM, {"metadata": {"name": "a"}})
    status, body = await http.request("PATCH", CM + "/a", {"data": {}}, content_type="text/plain")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")
    status, body = await http.request("PATCH", CM + "/a", {}, content_type="application/apply-patch+yaml")
    assert status == 415
    status, body = await http.request("POST", CM, content_type="application/json")
    assert (status, body["reason"]) == (400, "BadRequest")


async def test_list_filters_by_label_selector_operators(http):
    for name, labels in [("a", {"app": "x", "tier": "web"}), ("b", {"app": "y"}), ("c", {"tier": "db"})]:
        await http.post(CM, {"metadata": {"name": name, "labels": labels}})

    async def names(selector):
        status, body = await http.get(CM, params={"labelSelector": selector})
        assert status == 200 and body["kind"] == "ConfigMapList"
        assert int(body["metadata"]["resourceVersion"]) >= 1
        return sorted(item["metadata"]["name"] for item in body["items"])

    assert await names("app=x") == ["a"]
    assert await names("app==y") == ["b"]
    assert await names("app!=x") == ["b", "c"]
    assert await names("app in (x, y)") == ["a", "b"]
    assert await names("app notin (x),tier") == ["c"]
    assert await names("app") == ["a", "b"]
    assert await names("!app") == ["c"]
    assert await names("app=x,tier=web") == ["a"]


async def test_field_selectors_and_cluster_wide_lists(apiserver, http):
    await http.post("/api/v1/namespaces", {"metadata": {"name": "other"}})
    await http.post(PODS, _pod("p1", nodeName="node-1"))
    await http.post("/api/v1/namespaces/other/pods", _pod("p2"))
    _, body = await http.get("/api/v1/pods")
    assert sorted(i["metadata"]["name"] for i in body["items"]) == ["p1", "p2"]
    _, body = await http.get("/api/v1/pods", params={"fieldSelector": "metadata.namespace=other"})
    assert [i["metadata"]["name"] for i in body["items"]] == ["p2"]
    _, body = await http.get(PODS, params={"fieldSelector": "metadata.name=p1"})
    assert [i["metadata"]["name"] for i in body["items"]] == ["p1"]
    _, body = await http.get("/api/v1/pods", params={"fieldSelector": "spec.nodeName=node-1,status.phase=Pending"})
    assert [i["metadata"]["name"] for i in body["items"]] == ["p1"]
    _, body = await http.get("/api/v1/pods", params={"fieldSelector": "status.phase!=Pending", "limit": "5"})
    assert body["items"] == []


async def test_limit_and_continue_page_through_a_list(http):
    for n in range(5):
        await http.post(CM, {"metadata": {"name": f"c{n}"}})
    names, token = [], None
    while True:
        params = {"limit": "2", **({"continue": token} if token else {})}
        _, body = await http.get(CM, params=params)
        names += [i["metadata"]["name"] for i in body["items"]]
        token = body["metadata"].get("continue")
        if not token:
            break
    assert names == ["c0", "c1", "c2", "c3", "c4"]


async def test_put_with_a_stale_resource_version_conflicts(http):
    _, obj = await http.post(CM, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    fresh = {**obj, "data": {"k": "2"}}
    status, updated = await http.put(CM + "/a", fresh)
    assert status == 200 and updated["data"] == {"k": "2"}
    status, body = await http.put(CM + "/a", {**obj, "data": {"k": "3"}})
    assert (status, body["reason"]) == (409, "Conflict")
    status, body = await http.patch(
        CM + "/a", {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "data": {"k": "4"}}
    )
    assert status == 409


async def test_identical_writes_do_not_bump_the_resource_version(http):
    _, obj = await http.post(CM, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    _, same = await http.patch(CM + "/a", {"data": {"k": "1"}})
    assert same["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


async def test_three_patch_formats(http):
    await http.post(
        PODS,
        _pod(
            "p",
            containers=[
                {"name": "a", "image": "x", "env": [{"name": "E1", "value": "1"}]},
                {"name": "b", "image": "y"},
            ],
        ),
    )
    status, obj = await http.patch(
        PODS + "/p", {"spec": {"containers": [{"name": "a", "env": [{"name": "E2", "value": "2"}]}]}}, kind="strategic"
    )
    assert status == 200
    containers = {c["name"]: c for c in obj["spec"]["containers"]}
    assert set(containers) == {"a", "b"} and containers["a"]["image"] == "x"
    assert [e["name"] for e in containers["a"]["env"]] == ["E1", "E2"]
    _, obj = await http.patch(
        PODS + "/p", {"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}, kind="strategic"
    )
    assert [c["name"] for c in obj["spec"]["containers"]] == ["a"]
    _, obj = await http.patch(
        PODS + "/p", {"metadata": {"labels": {"x": "1"}}, "spec": {"containers": [{"name": "only", "image": "z"}]}}
    )
    assert [c["name"] for c in obj["spec"]["containers"]] == ["only"]  # merge patch replaces lists
    _, obj = await http.patch(
        PODS + "/p",
        [{"op": "add", "path": "/metadata/labels/y", "value": "2"}, {"op": "remove", "path": "/metadata/labels/x"}],
        kind="json",
    )
    assert obj["metadata"]["labels"] == {"y": "2"}
    status, body = await http.patch(
        PODS + "/p", [{"op": "test", "path": "/metadata/labels/y", "value": "3"}], kind="json"
    )
    assert status == 422


async def test_pods_status_subresource_isolates_status_from_spec(http):
    await http.post(PODS, _pod("p"))
    _, obj = await http.patch(PODS + "/p", {"status": {"phase": "Running"}, "metadata": {"labels": {"a": "b"}}})
    assert obj["status"]["phase"] == "Pending" and obj["metadata"]["labels"] == {"a": "b"}
    _, obj = await http.patch(PODS + "/p/status", {"status": {"phase": "Running"}, "metadata": {"labels": {"c": "d"}}})
    assert obj["status"]["phase"] == "Running" and obj["metadata"]["labels"] == {"a": "b"}
    _, obj = await http.get(PODS + "/p/status")
    assert obj["status"]["phase"] == "Running"


async def test_generation_moves_only_when_spec_changes(http):
    job = {
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "x"}]}}},
    }
    _, obj = await http.post("/apis/batch/v1/namespaces/default/jobs", job)
    assert obj["metadata"]["generation"] == 1 and obj["spec"]["backoffLimit"] == 6
    path = "/apis/batch/v1/namespaces/default/jobs/j"
    _, obj = await http.patch(path, {"metadata": {"annotations": {"a": "b"}}})
    assert obj["metadata"]["generation"] == 1
    _, obj = await http.patch(path + "/status", {"status": {"active": 1}})
    assert obj["metadata"]["generation"] == 1 and obj["status"]["active"] == 1
    _, obj = await http.patch(path, {"spec": {"backoffLimit": 2}})
    assert obj["metadata"]["generation"] == 2


async def test_pods_need_named_containers_with_images(http):
    status, body = await http.post(PODS, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "m"}]}})
    assert status == 422 and body["details"]["causes"][0]["field"] == "spec.containers[0].image"


async def test_jobs_need_a_restart_policy_that_ends(http):
    job = {"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "m", "image": "x"}]}}}}
    status, body = await http.post("/apis/batch/v1/namespaces/default/jobs", job)
    assert status == 422
    assert body["details"]["causes"][0]["field"] == "spec.template.spec.restartPolicy"


async def test_server_side_dry_run_stores_nothing(apiserver, http):
    status, obj = await http.post(CM, {"metadata": {"name": "a"}}, params={"dryRun": "All"})
    assert status == 201 and obj["metadata"]["name"] == "a"
    assert (await http.get(CM + "/a"))[0] == 404
    await http.post(CM, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    rv = apiserver.store.resource_version
    status, obj = await http.patch(CM + "/a", {"data": {"k": "2"}}, params={"dryRun": "All"})
    assert status == 200 and obj["data"] == {"k": "2"}
    assert (await http.get(CM + "/a"))[1]["data"] == {"k": "1"} and apiserver.store.resource_version == rv


async def test_namespaces_get_a_default_service_account(http):
    await http.post("/api/v1/namespaces", {"metadata": {"name": "team"}})
    status, sa = await http.get("/api/v1/namespaces/team/serviceaccounts/default")
    assert status == 200 and sa["kind"] == "ServiceAccount"
    status, ns = await http.get("/api/v1/namespaces/team")
    assert ns["status"]["phase"] == "Active"


async def test_fault_injection_fails_then_recovers(apiserver, http):
    apiserver.faults.add(method="PATCH", path_regex=r"/configmaps/a$", status=500, times=2)
    await http.post(CM, {"metadata": {"name": "a"}})
    assert (await http.patch(CM + "/a", {"data": {"k": "1"}}))[0] == 500
    assert (await http.patch(CM + "/a", {"data": {"k": "1"}}))[0] == 500
    assert (await http.patch(CM + "/a", {"data": {"k": "1"}}))[0] == 200
    apiserver.faults.add(method="PATCH", path_regex=r"/configmaps/a", status=0, times=1)
    with pytest.raises(aiohttp.ClientError):  # PATCH is not idempotent, so aiohttp does not retry it
        await http.patch(CM + "/a", {"data": {"k": "2"}})
    assert (await http.patch(CM + "/a", {"data": {"k": "2"}}))[0] == 200


async def test_binding_assigns_a_pod_to_a_node_once(http):
    await http.post(PODS, _pod("p"))
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"},
    }
    status, body = await http.post(PODS + "/p/binding", binding)
    assert (status, body["status"]) == (201, "Success")
    _, pod = await http.get(PODS + "/p")
    assert pod["spec"]["nodeName"] == "node-1"
    assert [c["type"] for c in pod["status"]["conditions"]] == ["PodScheduled"]
    status, body = await http.post(PODS + "/p/binding", binding)
    assert (status, body["reason"]) == (409, "Conflict")


async def test_eviction_deletes_the_pod(http):
    await http.post(PODS, _pod("p"))
    status, _ = await http.post(
        PODS + "/p/eviction", {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}}
    )
    assert status == 201 and (await http.get(PODS + "/p"))[0] == 404
