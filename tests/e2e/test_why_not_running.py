"""Why not running, for what only a real cluster refuses (issue 15), end to end in the sandbox.

The sandbox's API server refuses like a cluster's (ResourceQuota and Priority admission, 403 with
upstream's messages) and its Job controller posts FailedCreate events for pods it cannot create. The
real operator process must say why within seconds, never loop on a permanent refusal, and start over
when the spec changes. Each test records how long the status took to name the cause (the issue's
target: 10 s; asserted with room for a loaded machine).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from finetune_sandbox.cluster import wait_for
from sandbox_support import Cluster, finetunejob

pytestmark = pytest.mark.e2e

# The target is 10 s from the apply; a loaded CI machine gets three times that before a test fails.
NAMED_WITHIN = 30.0


def quota(cluster: Cluster, namespace: str, name: str, hard: dict[str, str]) -> None:
    cluster.core.create_namespaced_resource_quota(namespace, {"metadata": {"name": name}, "spec": {"hard": hard}})


def seconds_until_reason(cluster: Cluster, namespace: str, name: str, reason: str, started: float) -> float:
    def named() -> dict | None:
        status = cluster.status(namespace, name)
        return status if status.get("reason") == reason else None

    try:
        wait_for(named, NAMED_WITHIN, interval=0.1, message=f"{name}'s status to say {reason}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status: {cluster.status(namespace, name)}") from None
    took = time.monotonic() - started
    print(f"{name}: {reason} named {took:.1f} s after the apply")
    return took


def warnings(cluster: Cluster, namespace: str, name: str, reason: str) -> list:
    return [e for e in cluster.events(namespace, name) if e.type == "Warning" and e.reason == reason]


def ftjob_describe(cluster: Cluster, namespace: str, name: str) -> str:
    binary = shutil.which("ftjob") or str(Path(sys.executable).with_name("ftjob"))
    result = subprocess.run(
        [binary, "--kubeconfig", str(cluster.kubeconfig), "describe", name, "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_used_up_pod_quota_is_named_and_the_job_starts_once_the_quota_frees_up(cluster: Cluster, team: str):
    quota(cluster, team, "tiny", {"pods": "0"})
    started = time.monotonic()
    cluster.apply(finetunejob("quota-pods", team))
    seconds_until_reason(cluster, team, "quota-pods", "PodsCannotBeCreated", started)
    status = cluster.status(team, "quota-pods")
    assert status["phase"] == "Starting"  # not failed: quota frees up
    assert "exceeded quota: tiny, requested: pods=1, used: pods=0, limited: pods=0" in status["message"]
    assert "ResourceQuota" in status["message"]
    described = ftjob_describe(cluster, team, "quota-pods")
    assert "PodsCannotBeCreated" in described and "exceeded quota: tiny" in described

    cluster.kubectl(
        "patch", "resourcequota", "tiny", "-n", team, "--type=merge", "-p", '{"spec":{"hard":{"pods":"1"}}}'
    )
    status = cluster.wait_phase(team, "quota-pods", "Running", "Succeeded", timeout=180)
    assert status["reason"] != "PodsCannotBeCreated"


def test_a_used_up_gpu_quota_names_the_resource(cluster: Cluster, team: str):
    quota(cluster, team, "gpus", {"requests.nvidia.com/gpu": "0"})
    started = time.monotonic()
    cluster.apply(finetunejob("quota-gpus", team, resources={"gpusPerNode": 1}))
    seconds_until_reason(cluster, team, "quota-gpus", "PodsCannotBeCreated", started)
    message = cluster.status(team, "quota-gpus")["message"]
    assert "exceeded quota: gpus, requested: requests.nvidia.com/gpu=1" in message


def test_a_misspelt_priority_class_is_named_and_creating_it_lets_the_pods_in(cluster: Cluster, team: str):
    started = time.monotonic()
    cluster.apply(finetunejob("prio", team, scheduling={"priorityClassName": "gpu-hihg"}))
    seconds_until_reason(cluster, team, "prio", "PodsCannotBeCreated", started)
    message = cluster.status(team, "prio")["message"]
    assert "no PriorityClass with name gpu-hihg was found" in message
    assert "spec.scheduling.priorityClassName" in message

    cluster.kubectl("create", "priorityclass", "gpu-hihg", "--value=1000")
    try:
        status = cluster.wait_phase(team, "prio", "Running", "Succeeded", timeout=180)
        assert status["reason"] != "PodsCannotBeCreated"
    finally:
        cluster.kubectl("delete", "priorityclass", "gpu-hihg", check=False)


def test_a_forbidden_child_fails_the_job_once_without_retries_and_a_spec_change_starts_it_over(
    cluster: Cluster, team: str
):
    quota(cluster, team, "no-configmaps", {"configmaps": "0"})
    started = time.monotonic()
    cluster.apply(finetunejob("forbidden", team))
    seconds_until_reason(cluster, team, "forbidden", "Forbidden", started)
    status = cluster.status(team, "forbidden")
    assert status["phase"] == "Failed"
    assert "forbade the ConfigMap forbidden-config (HTTP 403)" in status["message"]
    assert "exceeded quota: no-configmaps" in status["message"]
    time.sleep(5)  # a retry loop would have tried again (1, 2, 4 s) by now
    assert len(warnings(cluster, team, "forbidden", "Forbidden")) == 1
    assert cluster.status(team, "forbidden")["phase"] == "Failed"
    assert cluster.batch.list_namespaced_job(team).items == []

    cluster.core.delete_namespaced_resource_quota("no-configmaps", team)
    patch = '{"spec":{"runPolicy":{"backoffLimit":2}}}'
    cluster.kubectl("patch", "finetunejob", "forbidden", "-n", team, "--type=merge", "-p", patch)
    status = cluster.wait_phase(team, "forbidden", "Starting", "Running", "Succeeded", timeout=60)
    assert status.get("failure") is None


def test_a_job_the_api_server_refuses_fails_as_invalid_spec_naming_the_field_and_is_not_retried(
    cluster: Cluster, team: str
):
    # A field the Job API validates more strictly than the CRD (a stale CRD, or a rule it cannot express):
    # the refusal is injected with the API server's own words, the rest is the real operator and server.
    refused = (
        'Job.batch "refused" is invalid: spec.template.spec.tolerations[0].operator: Unsupported value: '
        '"Sometimes": supported values: "Equal", "Exists"'
    )
    faults = cluster.sandbox.server.faults
    rule = faults.add(
        method="POST",
        path_regex=rf"^/apis/batch/v1/namespaces/{team}/jobs(\?|$)",
        status=422,
        times=None,
        message=refused,
    )
    try:
        started = time.monotonic()
        cluster.apply(finetunejob("refused", team, scheduling={"tolerations": [{"key": "gpu", "operator": "Exists"}]}))
        seconds_until_reason(cluster, team, "refused", "InvalidSpec", started)
        status = cluster.status(team, "refused")
        assert status["phase"] == "Failed"
        assert (
            "fix spec.scheduling.tolerations" in status["message"]
            and 'Unsupported value: "Sometimes"' in status["message"]
        )
        time.sleep(5)
        assert rule.hits == 1, f"the operator sent the refused Job {rule.hits} times"
        assert len(warnings(cluster, team, "refused", "InvalidSpec")) == 1
    finally:
        faults.rules.remove(rule)
    patch = '{"spec":{"scheduling":{"tolerations":[{"key":"gpu","operator":"Exists","effect":"NoSchedule"}]}}}'
    cluster.kubectl("patch", "finetunejob", "refused", "-n", team, "--type=merge", "-p", patch)
    cluster.wait_phase(team, "refused", "Starting", "Running", "Succeeded", timeout=60)
    assert cluster.batch.read_namespaced_job("refused", team).metadata.name == "refused"
