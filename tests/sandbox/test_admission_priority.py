"""PriorityClasses in the sandbox API server and the Priority admission plugin's refusals (upstream:
plugin/pkg/admission/priority, pkg/apis/scheduling/validation)."""

from __future__ import annotations

import pytest
from finetune_sandbox.apiserver.testing import RawClient

PODS = "/api/v1/namespaces/default/pods"
CLASSES = "/apis/scheduling.k8s.io/v1/priorityclasses"


@pytest.fixture
async def http(apiserver):
    async with RawClient(apiserver.url) as client:
        yield client


def pod(name: str | None = None, *, generate: str | None = None, **spec) -> dict:
    meta = {"name": name} if name else {"generateName": generate}
    return {"metadata": meta, "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec}}


async def test_priority_classes_are_served_cluster_scoped_with_the_system_ones_present(http):
    status, discovery = await http.get("/apis/scheduling.k8s.io/v1")
    entry = next(r for r in discovery["resources"] if r["name"] == "priorityclasses")
    assert (entry["namespaced"], entry["kind"], entry["shortNames"]) == (False, "PriorityClass", ["pc"])
    _, listing = await http.get(CLASSES)
    system = {pc["metadata"]["name"]: pc["value"] for pc in listing["items"]}
    assert system == {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}
    status, created = await http.post(CLASSES, {"metadata": {"name": "gpu-high"}, "value": 1000})
    assert status == 201 and created["preemptionPolicy"] == "PreemptLowerPriority"


async def test_a_missing_priority_class_refuses_the_pod(http):
    status, body = await http.post(PODS, pod("p", priorityClassName="gpu-high"))
    assert status == 403
    assert body["message"] == 'pods "p" is forbidden: no PriorityClass with name gpu-high was found'
    assert body["reason"] == "Forbidden"


async def test_the_refusal_of_a_generated_name_names_the_prefix(http):
    # Priority is a mutating plugin: it runs before the name is generated, so it knows only the prefix.
    status, body = await http.post(PODS, pod(generate="train-0-", priorityClassName="gpu-hgih"))
    assert status == 403
    assert body["message"] == 'pods "train-0-" is forbidden: no PriorityClass with name gpu-hgih was found'


async def test_an_existing_class_sets_the_pods_priority(http):
    await http.post(CLASSES, {"metadata": {"name": "gpu-high"}, "value": 1000, "preemptionPolicy": "Never"})
    status, body = await http.post(PODS, pod("p", priorityClassName="gpu-high"))
    assert status == 201
    assert (body["spec"]["priority"], body["spec"]["preemptionPolicy"]) == (1000, "Never")
    status, body = await http.post(PODS, pod("q"))
    assert (body["spec"]["priority"], body["spec"]["preemptionPolicy"]) == (0, "PreemptLowerPriority")
    assert "priorityClassName" not in body["spec"]


async def test_the_global_default_applies_to_pods_without_a_class_and_there_is_only_one(http):
    await http.post(CLASSES, {"metadata": {"name": "normal"}, "value": 100, "globalDefault": True})
    status, body = await http.post(CLASSES, {"metadata": {"name": "other"}, "value": 5, "globalDefault": True})
    assert status == 403
    assert body["message"] == (
        'priorityclasses.scheduling.k8s.io "other" is forbidden: PriorityClass normal is already marked as default. '
        "Only one default can exist"
    )
    _, created = await http.post(PODS, pod("p"))
    assert (created["spec"]["priority"], created["spec"]["priorityClassName"]) == (100, "normal")


async def test_a_pod_may_not_bring_a_priority_of_its_own(http):
    status, body = await http.post(PODS, pod("p", priority=7))
    assert status == 403
    assert body["message"] == (
        'pods "p" is forbidden: the integer value of priority (7) must not be provided in pod spec; priority '
        "admission controller computed 0 from the given PriorityClass name"
    )


async def test_priority_class_validation(http):
    status, body = await http.post(CLASSES, {"metadata": {"name": "huge"}, "value": 2000000000})
    assert status == 422
    assert body["message"] == (
        'PriorityClass.scheduling.k8s.io "huge" is invalid: value: Forbidden: maximum allowed value of a user '
        "defined priority is 1000000000"
    )
    status, body = await http.post(CLASSES, {"metadata": {"name": "system-mine"}, "value": 1})
    assert status == 422 and "reserved for system use only" in body["message"]
    await http.post(CLASSES, {"metadata": {"name": "fixed"}, "value": 1})
    status, body = await http.patch(f"{CLASSES}/fixed", {"value": 2})
    assert status == 422
    assert (
        body["message"]
        == 'PriorityClass.scheduling.k8s.io "fixed" is invalid: value: Forbidden: may not be changed in an update.'
    )
    status, body = await http.patch(f"{CLASSES}/fixed", {"description": "ok"})
    assert status == 200
