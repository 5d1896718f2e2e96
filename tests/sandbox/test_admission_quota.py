"""ResourceQuota in the sandbox API server: refusals with upstream's messages, and `status.used` kept in step.

Upstream: plugin/pkg/admission/resourcequota (`CheckRequest`), pkg/quota/v1/evaluator/core/pods.go.
"""

from __future__ import annotations

import pytest
from finetune_sandbox.apiserver.quantity import format_quantity, parse_quantity
from finetune_sandbox.apiserver.testing import RawClient

NS = "default"
PODS = f"/api/v1/namespaces/{NS}/pods"
QUOTAS = f"/api/v1/namespaces/{NS}/resourcequotas"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"


@pytest.fixture
async def http(apiserver):
    async with RawClient(apiserver.url) as client:
        yield client


def pod(name: str, *, requests: dict | None = None, limits: dict | None = None, containers: int = 1) -> dict:
    resources = {**({"requests": requests} if requests else {}), **({"limits": limits} if limits else {})}
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": f"c{i}", "image": "busybox", **({"resources": resources} if resources else {})}
                for i in range(containers)
            ]
        },
    }


async def quota(http, name: str, hard: dict, **spec) -> dict:
    status, body = await http.post(QUOTAS, {"metadata": {"name": name}, "spec": {"hard": hard, **spec}})
    assert status == 201, body
    status, body = await http.get(f"{QUOTAS}/{name}")
    assert status == 200
    return body


async def used(http, name: str) -> dict:
    return (await http.get(f"{QUOTAS}/{name}"))[1]["status"]["used"]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("0", "0"),
        ("500m", "500m"),
        ("0.5", "500m"),
        ("1.5", "1500m"),
        ("1000", "1k"),
        ("1500", "1500"),
        ("1024Mi", "1Gi"),
        ("1536Mi", "1536Mi"),
        ("1.5Gi", "1536Mi"),
        ("512", "512"),
        ("1e3", "1e3"),
    ],
)
def test_quantities_print_in_canonical_form(text, canonical):
    assert format_quantity(parse_quantity(text)) == canonical


def test_a_sum_keeps_the_format_of_its_first_non_zero_term():
    assert format_quantity(parse_quantity("0") + parse_quantity("1Gi")) == "1Gi"
    assert format_quantity(parse_quantity("1Gi") + parse_quantity("512Mi")) == "1536Mi"
    assert format_quantity(parse_quantity("500m") + parse_quantity("1")) == "1500m"


async def test_a_quota_gets_its_status_at_once_in_canonical_form(http):
    body = await quota(http, "q", {"pods": "2", "requests.memory": "1024Mi", "requests.cpu": "0.5"})
    assert body["spec"]["hard"] == {"pods": "2", "requests.memory": "1Gi", "requests.cpu": "500m"}
    assert body["status"]["hard"] == body["spec"]["hard"]
    assert body["status"]["used"] == {"pods": "0", "requests.memory": "0", "requests.cpu": "0"}


async def test_a_quota_with_no_room_for_pods_refuses_a_pod_as_a_cluster_does(http):
    await quota(http, "tiny", {"pods": "0"})
    status, body = await http.post(PODS, pod("p"))
    assert status == 403
    assert (
        body["message"]
        == 'pods "p" is forbidden: exceeded quota: tiny, requested: pods=1, used: pods=0, limited: pods=0'
    )
    assert (body["reason"], body["code"], body["details"]) == (
        "Forbidden",
        403,
        {"name": "p", "group": "", "kind": "pods"},
    )
    assert (await http.get(f"{PODS}/p"))[0] == 404


async def test_cpu_memory_and_gpu_requests_are_charged_and_refused_with_their_numbers(http):
    await quota(http, "compute", {"requests.cpu": "1", "requests.memory": "1Gi", "requests.nvidia.com/gpu": "1"})
    ok = pod("ok", requests={"cpu": "500m", "memory": "512Mi"}, limits={"nvidia.com/gpu": "1"})
    assert (await http.post(PODS, ok))[0] == 201
    assert await used(http, "compute") == {
        "requests.cpu": "500m",
        "requests.memory": "512Mi",
        "requests.nvidia.com/gpu": "1",
    }

    status, body = await http.post(
        PODS, pod("more-gpu", requests={"cpu": "100m", "memory": "1Mi", "nvidia.com/gpu": "1"})
    )
    assert status == 403
    assert body["message"] == (
        'pods "more-gpu" is forbidden: exceeded quota: compute, requested: requests.nvidia.com/gpu=1, '
        "used: requests.nvidia.com/gpu=1, limited: requests.nvidia.com/gpu=1"
    )
    # Two containers add up; every exceeded resource is named, sorted.
    status, body = await http.post(PODS, pod("big", requests={"cpu": "300m", "memory": "384Mi"}, containers=2))
    assert status == 403
    assert body["message"] == (
        'pods "big" is forbidden: exceeded quota: compute, requested: requests.cpu=600m,requests.memory=768Mi, '
        "used: requests.cpu=500m,requests.memory=512Mi, limited: requests.cpu=1,requests.memory=1Gi"
    )


async def test_a_quota_on_cpu_or_memory_needs_every_container_to_state_it(http):
    await quota(http, "needs", {"requests.cpu": "4", "limits.memory": "8Gi"})
    bare = pod("bare", containers=2)
    status, body = await http.post(PODS, bare)
    assert status == 403
    assert body["message"] == (
        'pods "bare" is forbidden: failed quota: needs: must specify limits.memory for: c0,c1; requests.cpu for: c0,c1'
    )
    # Limits stand in for requests a container does not set (the API server defaults requests from limits).
    assert (await http.post(PODS, pod("limits-only", limits={"cpu": "1", "memory": "1Gi"})))[0] == 201
    assert await used(http, "needs") == {"requests.cpu": "1", "limits.memory": "1Gi"}


async def test_used_goes_up_and_down_as_pods_come_and_go(http, apiserver):
    await quota(http, "count", {"pods": "2", "count/pods": "5", "requests.cpu": "2"})
    for name in ("a", "b"):
        assert (await http.post(PODS, pod(name, requests={"cpu": "1"})))[0] == 201
    assert await used(http, "count") == {"pods": "2", "count/pods": "2", "requests.cpu": "2"}
    assert (await http.post(PODS, pod("c", requests={"cpu": "1"})))[0] == 403

    # A pod that ended uses no compute and no "pods", but still counts as an object (count/pods).
    status, _ = await http.patch(f"{PODS}/a/status", {"status": {"phase": "Succeeded"}})
    assert status == 200
    assert await used(http, "count") == {"pods": "1", "count/pods": "2", "requests.cpu": "1"}
    assert (await http.post(PODS, pod("c", requests={"cpu": "1"})))[0] == 201

    # Deleting pods gives everything back.
    for name in ("a", "b", "c"):
        assert (await http.request("DELETE", f"{PODS}/{name}"))[0] == 200
    assert await used(http, "count") == {"pods": "0", "count/pods": "0", "requests.cpu": "0"}


async def test_raising_the_quota_lets_the_next_pod_in(http):
    await quota(http, "tiny", {"pods": "0"})
    assert (await http.post(PODS, pod("p")))[0] == 403
    status, body = await http.patch(f"{QUOTAS}/tiny", {"spec": {"hard": {"pods": "1"}}})
    assert status == 200
    assert (await http.get(f"{QUOTAS}/tiny"))[1]["status"] == {"hard": {"pods": "1"}, "used": {"pods": "0"}}
    assert (await http.post(PODS, pod("p")))[0] == 201
    assert await used(http, "tiny") == {"pods": "1"}


async def test_a_generated_name_is_the_one_the_refusal_names(http):
    await quota(http, "tiny", {"pods": "0"})
    body = pod("x")
    body["metadata"] = {"generateName": "train-0-"}
    status, answer = await http.post(PODS, body)
    assert status == 403
    name = answer["details"]["name"]
    assert name.startswith("train-0-") and len(name) == len("train-0-") + 5
    assert answer["message"].startswith(f'pods "{name}" is forbidden: exceeded quota: tiny')


async def test_object_counts_refuse_jobs_and_configmaps_too(http):
    await quota(http, "objects", {"count/jobs.batch": "0", "configmaps": "1"})
    job = {
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "x"}]}}},
    }
    status, body = await http.post(JOBS, job)
    assert status == 403
    assert body["message"] == (
        'jobs.batch "j" is forbidden: exceeded quota: objects, requested: count/jobs.batch=1, '
        "used: count/jobs.batch=0, limited: count/jobs.batch=0"
    )
    cm = "/api/v1/namespaces/default/configmaps"
    assert (await http.post(cm, {"metadata": {"name": "one"}}))[0] == 201
    status, body = await http.post(cm, {"metadata": {"name": "two"}})
    assert status == 403 and "requested: configmaps=1, used: configmaps=1, limited: configmaps=1" in body["message"]


async def test_scoped_quotas_count_only_the_pods_they_select(http):
    await quota(
        http,
        "gpu-class",
        {"pods": "0"},
        scopeSelector={"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["gpu-high"]}]},
    )
    assert (await http.post(PODS, pod("plain")))[0] == 201
    await http.post("/apis/scheduling.k8s.io/v1/priorityclasses", {"metadata": {"name": "gpu-high"}, "value": 1000})
    selected = pod("selected")
    selected["spec"]["priorityClassName"] = "gpu-high"
    status, body = await http.post(PODS, selected)
    assert status == 403 and "exceeded quota: gpu-class" in body["message"]
    assert await used(http, "gpu-class") == {"pods": "0"}


async def test_a_quota_with_a_bad_resource_name_or_quantity_is_refused(http):
    status, body = await http.post(QUOTAS, {"metadata": {"name": "bad"}, "spec": {"hard": {"gpus": "1"}}})
    assert status == 422
    assert body["message"] == (
        'ResourceQuota "bad" is invalid: spec.hard[gpus]: Invalid value: "gpus": must be a standard resource for quota'
    )
    status, body = await http.post(QUOTAS, {"metadata": {"name": "bad"}, "spec": {"hard": {"pods": "many"}}})
    assert status == 400 and "quantities must match the regular expression" in body["message"]


async def test_dry_run_creates_are_checked_and_charge_nothing(http):
    await quota(http, "one", {"pods": "1"})
    assert (await http.post(PODS, pod("dry"), params={"dryRun": "All"}))[0] == 201
    assert await used(http, "one") == {"pods": "0"}
    await http.patch(f"{QUOTAS}/one", {"spec": {"hard": {"pods": "0"}}})
    assert (await http.post(PODS, pod("dry"), params={"dryRun": "All"}))[0] == 403
