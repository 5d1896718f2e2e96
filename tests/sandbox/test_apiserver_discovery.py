"""Discovery, version and OpenAPI documents, and pod logs."""

from __future__ import annotations

import asyncio

import pytest
from finetune_sandbox.apiserver.testing import RawClient


@pytest.fixture
async def http(apiserver):
    async with RawClient(apiserver.url) as client:
        yield client


async def test_version_and_core_discovery(http):
    _, version = await http.get("/version")
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.")
    _, api = await http.get("/api")
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    _, core = await http.get("/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert {
        "namespaces",
        "pods",
        "pods/log",
        "pods/status",
        "services",
        "configmaps",
        "secrets",
        "events",
        "persistentvolumeclaims",
        "serviceaccounts",
        "nodes",
    } <= set(by_name)
    assert by_name["nodes"]["namespaced"] is False and by_name["pods"]["shortNames"] == ["po"]
    assert by_name["pods"]["singularName"] == "pod" and "all" in by_name["pods"]["categories"]


async def test_group_discovery_lists_builtin_groups(http):
    _, groups = await http.get("/apis")
    names = {g["name"] for g in groups["groups"]}
    assert {"batch", "coordination.k8s.io", "events.k8s.io", "apiextensions.k8s.io"} <= names
    _, batch = await http.get("/apis/batch/v1")
    assert {r["name"] for r in batch["resources"]} == {"jobs", "jobs/status"}
    assert (await http.get("/apis/nothing.example.com/v1"))[0] == 404


async def test_aggregated_discovery_requests_get_plain_documents_for_fallback(http):
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    _, groups = await http.get("/apis", headers={"Accept": accept})
    assert groups["kind"] == "APIGroupList"


async def test_openapi_v3_announces_field_validation_for_every_group_version(http):
    _, root = await http.get("/openapi/v3")
    assert "api/v1" in root["paths"] and "apis/batch/v1" in root["paths"]
    _, doc = await http.get(root["paths"]["apis/batch/v1"]["serverRelativeURL"])
    patch = doc["paths"]["/apis/batch/v1/namespaces/{namespace}/jobs/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Job"
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]


async def test_pod_logs_tail_and_follow(apiserver, http, tmp_path):
    log = tmp_path / "main.log"
    log.write_text("one\ntwo\nthree\n")
    pods = "/api/v1/namespaces/default/pods"
    await http.post(pods, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "image": "x"}]}})
    status, body = await http.get(pods + "/p/log")
    assert status == 400 and "waiting to start" in body["message"]
    apiserver.set_log_path("default", "p", "main", log)
    assert (await http.get(pods + "/p/log"))[1] == "one\ntwo\nthree\n"
    assert (await http.get(pods + "/p/log", params={"tailLines": "1", "container": "main"}))[1] == "three\n"
    assert (await http.get(pods + "/p/log", params={"container": "other"}))[0] == 400

    async def follow():
        async with http.session.get(apiserver.url + pods + "/p/log", params={"follow": "true"}) as response:
            return await response.text()

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    with log.open("a") as f:
        f.write("four\n")
    await asyncio.sleep(0.3)
    await http.patch(pods + "/p/status", {"status": {"phase": "Succeeded"}})
    assert await asyncio.wait_for(task, 5) == "one\ntwo\nthree\nfour\n"
