"""Quotas and PriorityClasses through real clients: kubectl's typed `create` commands (protobuf bodies), its
tables, and the official `kubernetes` client the e2e tests use."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

KUBECTL = os.path.join(os.path.dirname(sys.executable), "kubectl")


@pytest.fixture
def kubeconfig(apiserver, tmp_path):
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig")


async def kubectl(kubeconfig, *args):
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(kubeconfig), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_kubectl_creates_quotas_and_priority_classes_and_prints_them(kubeconfig):
    rc, out, err = await kubectl(kubeconfig, "create", "quota", "tiny", "--hard=pods=0,requests.memory=1024Mi")
    assert rc == 0, err
    rc, out, err = await kubectl(kubeconfig, "create", "priorityclass", "gpu-high", "--value=1000")
    assert rc == 0, err
    rc, out, _ = await kubectl(kubeconfig, "get", "quota")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "AGE", "REQUEST", "LIMIT"]
    assert row.split(None, 2)[2].strip() == "pods: 0/0, requests.memory: 0/1Gi"
    rc, out, _ = await kubectl(kubeconfig, "get", "pc", "gpu-high", "-o", "json")
    assert (json.loads(out)["value"], json.loads(out)["preemptionPolicy"]) == (1000, "PreemptLowerPriority")
    rc, out, err = await kubectl(kubeconfig, "run", "x", "--image=busybox")
    assert rc != 0
    assert (
        'Error from server (Forbidden): pods "x" is forbidden: failed quota: tiny: must specify requests.memory' in err
    )


async def test_the_official_client_sees_403_with_the_message_and_422_with_causes(kubeconfig):
    def scenario() -> None:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        core, scheduling, batch = client.CoreV1Api(api), client.SchedulingV1Api(api), client.BatchV1Api(api)
        core.create_namespaced_resource_quota(
            "default", {"metadata": {"name": "tiny"}, "spec": {"hard": {"pods": "0"}}}
        )
        scheduling.create_priority_class({"metadata": {"name": "gpu-high"}, "value": 1000})
        quota = core.read_namespaced_resource_quota("tiny", "default")
        assert (quota.status.hard, quota.status.used) == ({"pods": "0"}, {"pods": "0"})
        with pytest.raises(ApiException) as refused:
            core.create_namespaced_pod(
                "default", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "m", "image": "x"}]}}
            )
        assert refused.value.status == 403
        assert json.loads(refused.value.body)["message"] == (
            'pods "p" is forbidden: exceeded quota: tiny, requested: pods=1, used: pods=0, limited: pods=0'
        )
        job = {
            "metadata": {"name": "j"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "tolerations": [{"key": "gpu", "operator": "Sometimes"}],
                        "containers": [{"name": "m", "image": "x"}],
                    }
                }
            },
        }
        with pytest.raises(ApiException) as invalid:
            batch.create_namespaced_job("default", job)
        body = json.loads(invalid.value.body)
        assert invalid.value.status == 422 and body["reason"] == "Invalid"
        assert body["details"]["causes"][0]["field"] == "spec.template.spec.tolerations[0].operator"
        api.close()

    await asyncio.to_thread(scenario)
