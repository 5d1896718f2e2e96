"""CustomResourceDefinitions: discovery, schema validation, status subresource, printing, removal."""

from __future__ import annotations

import asyncio
import copy

import pytest
from finetune_sandbox.apiserver.testing import RawClient

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wdg"],
            "categories": ["all"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                                },
                                "x-kubernetes-validations": [{"rule": "self.size != 7", "message": "7 is unlucky"}],
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
async def http(apiserver):
    async with RawClient(apiserver.url) as client:
        status, _ = await client.post(CRDS, WIDGET_CRD)
        assert status == 201
        yield client


async def test_a_created_crd_is_established_and_discoverable(http):
    _, crd = await http.get(CRDS + "/widgets.example.com")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["kind"] == "Widget" and crd["status"]["storedVersions"] == ["v1"]
    _, groups = await http.get("/apis")
    assert "example.com" in [g["name"] for g in groups["groups"]]
    _, group = await http.get("/apis/example.com")
    assert group["preferredVersion"]["version"] == "v1"
    _, resources = await http.get("/apis/example.com/v1")
    by_name = {r["name"]: r for r in resources["resources"]}
    assert by_name["widgets"]["kind"] == "Widget" and by_name["widgets"]["shortNames"] == ["wdg"]
    assert by_name["widgets"]["namespaced"] and "watch" in by_name["widgets"]["verbs"]
    assert "widgets/status" in by_name


async def test_custom_resources_are_defaulted_pruned_and_validated(http):
    status, obj = await http.post(
        WIDGETS,
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": 3, "junk": True},
        },
    )
    assert status == 201 and obj["spec"] == {"size": 3, "color": "red"}
    status, body = await http.post(WIDGETS, {"metadata": {"name": "bad"}, "spec": {"size": 30, "color": "green"}})
    assert (status, body["reason"]) == (422, "Invalid")
    assert {c["field"] for c in body["details"]["causes"]} == {"spec.size", "spec.color"}
    status, body = await http.patch(WIDGETS + "/w", {"spec": {"size": 7}})
    assert status == 422 and "7 is unlucky" in body["message"]
    status, body = await http.post(
        WIDGETS, {"metadata": {"name": "strict"}, "spec": {"size": 1, "junk": 1}}, params={"fieldValidation": "Strict"}
    )
    assert status == 400 and 'unknown field "spec.junk"' in body["message"]


async def test_custom_resource_status_subresource(http):
    await http.post(WIDGETS, {"metadata": {"name": "w"}, "spec": {"size": 3}, "status": {"phase": "ignored"}})
    _, obj = await http.get(WIDGETS + "/w")
    assert "status" not in obj
    _, obj = await http.patch(WIDGETS + "/w/status", {"status": {"phase": "Ready"}, "spec": {"size": 5}})
    assert obj["status"] == {"phase": "Ready"} and obj["spec"]["size"] == 3 and obj["metadata"]["generation"] == 1
    _, obj = await http.patch(WIDGETS + "/w", {"status": {"phase": "Lost"}, "spec": {"size": 4}})
    assert obj["status"] == {"phase": "Ready"} and obj["metadata"]["generation"] == 2


async def test_without_a_status_subresource_status_is_part_of_the_object(http):
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"] = "gadgets.example.com"
    crd["spec"]["names"] = {"plural": "gadgets", "kind": "Gadget"}
    del crd["spec"]["versions"][0]["subresources"]
    await http.post(CRDS, crd)
    path = "/apis/example.com/v1/namespaces/default/gadgets"
    _, obj = await http.post(path, {"metadata": {"name": "g"}, "spec": {"size": 1}, "status": {"phase": "A"}})
    assert obj["status"] == {"phase": "A"}
    assert (await http.patch(path + "/g/status", {"status": {}}))[0] == 404


async def test_tables_use_the_printer_columns(http):
    await http.post(WIDGETS, {"metadata": {"name": "w"}, "spec": {"size": 3}})
    await http.patch(
        WIDGETS + "/w/status",
        {"status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}},
    )
    status, table = await http.get(WIDGETS, headers=TABLE)
    assert status == 200 and table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Ready", "Age"]
    cells = table["rows"][0]["cells"]
    assert cells[:3] == ["w", 3, "True"] and cells[3].endswith("s")
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    _, one = await http.get(WIDGETS + "/w", headers=TABLE)
    assert one["rows"][0]["cells"][0] == "w"
    events = await http.watch(WIDGETS, max_events=1, headers=TABLE)  # what `kubectl get -w` reads
    assert events[0]["type"] == "ADDED" and events[0]["object"]["kind"] == "Table"
    assert events[0]["object"]["rows"][0]["cells"][:3] == ["w", 3, "True"]


async def test_builtin_tables_have_sensible_columns(http):
    await http.post(
        "/api/v1/namespaces/default/pods",
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "m", "image": "x"}]}},
    )
    _, table = await http.get("/api/v1/namespaces/default/pods", headers=TABLE)
    assert [c["name"] for c in table["columnDefinitions"]][:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert table["rows"][0]["cells"][:4] == ["p", "0/1", "Pending", "0"]
    await http.post(
        "/api/v1/namespaces/default/events",
        {
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "p"},
            "type": "Normal",
            "reason": "Started",
            "message": "started",
        },
    )
    _, table = await http.get("/api/v1/namespaces/default/events", headers=TABLE)
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "Last Seen",
        "Type",
        "Reason",
        "Object",
        "Message",
    ]
    assert table["rows"][0]["cells"][2:] == ["Normal", "Started", "pod/p", "started"]


async def test_deleting_a_crd_removes_its_objects_and_its_api(http):
    await http.post(WIDGETS, {"metadata": {"name": "w"}, "spec": {"size": 3}})
    await http.delete(CRDS + "/widgets.example.com")
    for _ in range(60):
        if (await http.get(CRDS + "/widgets.example.com"))[0] == 404:
            break
        await asyncio.sleep(0.05)
    assert (await http.get(WIDGETS))[0] == 404
    _, groups = await http.get("/apis")
    assert "example.com" not in [g["name"] for g in groups["groups"]]


async def test_invalid_crds_are_rejected(http):
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"] = "wrong.example.com"
    status, body = await http.post(CRDS, crd)
    assert status == 422 and body["details"]["causes"][0]["field"] == "metadata.name"
