"""The scheduler's pure decisions: extended resources block, CPU/memory do not, nodeSelector matches labels."""

from __future__ import annotations

from decimal import Decimal

import pytest
from finetune_sandbox.scheduler import (
    build_node,
    is_ours_to_schedule,
    parse_quantity,
    pod_requests,
    schedule_decision,
)

NODE = build_node("sandbox", {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": 2}, {"pool": "gpu"})


def pod(name: str, gpus: int = 0, *, cpu: str = "1", phase: str = "Pending", use_limits: bool = False, **spec) -> dict:
    resources = {"cpu": cpu, "memory": "100Gi"}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    key = "limits" if use_limits else "requests"
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"containers": [{"name": "c", "resources": {key: resources}}], **spec},
        "status": {"phase": phase},
    }


@pytest.mark.parametrize(
    ("text", "value"), [("2", 2), ("500m", Decimal("0.5")), ("16Gi", 16 * 2**30), ("1k", 1000), (3, 3)]
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


def test_parse_quantity_names_the_bad_value():
    with pytest.raises(ValueError, match="'lots'"):
        parse_quantity("lots")


def test_gpus_fit_until_exhausted_with_the_real_scheduler_message():
    bound = [pod("a", 1, phase="Running")]
    assert schedule_decision(pod("b", 1), NODE, bound).fits
    decision = schedule_decision(pod("c", 2), NODE, bound)
    assert not decision.fits
    assert decision.message == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


def test_finished_pods_free_their_gpus():
    bound = [pod("a", 2, phase="Succeeded")]
    assert schedule_decision(pod("b", 2), NODE, bound).fits


def test_limits_count_as_requests_for_extended_resources():
    assert not schedule_decision(pod("b", 3, use_limits=True), NODE, []).fits


def test_cpu_and_memory_never_block():
    assert schedule_decision(pod("big", cpu="64"), NODE, [pod("x", cpu="64", phase="Running")]).fits


def test_unknown_extended_resource_is_insufficient():
    body = pod("amd")
    body["spec"]["containers"][0]["resources"]["requests"]["amd.com/gpu"] = "1"
    assert schedule_decision(body, NODE, []).message == "0/1 nodes are available: 1 Insufficient amd.com/gpu."


def test_node_selector_must_match_node_labels():
    assert schedule_decision(pod("p", nodeSelector={"pool": "gpu"}), NODE, []).fits
    decision = schedule_decision(pod("p", nodeSelector={"pool": "cpu"}), NODE, [])
    assert decision.message == "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."


def test_init_containers_count_by_their_maximum():
    body = pod("p", 1)
    body["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"nvidia.com/gpu": "2"}}}]
    assert pod_requests(body)["nvidia.com/gpu"] == 2


def test_only_default_scheduler_pods_that_are_unbound_and_alive_are_ours():
    assert is_ours_to_schedule(pod("p"))
    assert is_ours_to_schedule(pod("p", schedulerName="default-scheduler"))
    assert not is_ours_to_schedule(pod("p", schedulerName="volcano"))
    assert not is_ours_to_schedule(pod("p", nodeName="sandbox"))
    assert not is_ours_to_schedule(pod("p", phase="Failed"))


def test_node_carries_capacity_as_allocatable_and_hostname_label():
    assert NODE["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert NODE["status"]["capacity"] == NODE["status"]["allocatable"]
    assert NODE["metadata"]["labels"]["kubernetes.io/hostname"] == "sandbox"
