"""Children in dependency order (issue 14): the API server sees a run's ConfigMap and progress Secret
created before its Job, so no pod ever meets a missing volume or env source.

On a real cluster the Job controller and the scheduler hand a Job's pod to a kubelet within milliseconds; a
kubelet that finds the pod's ConfigMap or Secret missing fails the mount (FailedMount), retries with its
back-off and delays the trainer. The sandbox's kubelet does the same (tests/sandbox/test_kubelet_missing_sources.py),
so this test reads both the order the API server committed the creations in and what the kubelet reported.

The API server refuses the ConfigMap's creates (500s) for a second after the operator first tries: in
dependency order that holds the Job back too, while a Job sent first would have its pod wait on the missing
ConfigMap, for certain, not only when the kubelet wins a race of milliseconds (the sandbox's Job controller,
scheduler and kubelet take 20-40 ms from a Job to a failed mount; the operator's next create is faster).
"""

from __future__ import annotations

import json
import time

import pytest
from finetune_sandbox.cluster import wait_for
from sandbox_support import Cluster, finetunejob

pytestmark = pytest.mark.e2e

# Seconds the API server keeps refusing the ConfigMap after the operator's first try.
REFUSE_FOR = 1.0


def watch_history(cluster: Cluster, url: str, since: str) -> list[dict]:
    """The watch events the API server replays for `url` from resourceVersion `since` (its commit order)."""
    result = cluster.kubectl("get", "--raw", f"{url}?watch=1&resourceVersion={since}&timeoutSeconds=1")
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert all(event["type"] != "ERROR" for event in events), events  # e.g. 410 Gone: history compacted
    return events


def creation_versions(cluster: Cluster, namespace: str, since: str) -> dict[tuple[str, str], int]:
    """(kind, name) -> the resourceVersion the API server gave the object when it was created."""
    urls = {
        "ConfigMap": f"/api/v1/namespaces/{namespace}/configmaps",
        "Secret": f"/api/v1/namespaces/{namespace}/secrets",
        "Service": f"/api/v1/namespaces/{namespace}/services",
        "Job": f"/apis/batch/v1/namespaces/{namespace}/jobs",
    }
    created = {}
    for kind, url in urls.items():
        for event in watch_history(cluster, url, since):
            if event["type"] == "ADDED":
                meta = event["object"]["metadata"]
                created[(kind, meta["name"])] = int(meta["resourceVersion"])
    return created


def all_children_exist(cluster: Cluster, namespace: str) -> bool:
    core = cluster.core
    names = {
        "ConfigMap": {i.metadata.name for i in core.list_namespaced_config_map(namespace).items},
        "Secret": {i.metadata.name for i in core.list_namespaced_secret(namespace).items},
        "Service": {i.metadata.name for i in core.list_namespaced_service(namespace).items},
        "Job": {i.metadata.name for i in cluster.batch.list_namespaced_job(namespace).items},
    }
    wanted = {"ConfigMap": "ordered-config", "Secret": "ordered-progress", "Service": "ordered", "Job": "ordered"}
    return all(name in names[kind] for kind, name in wanted.items())


def test_configmap_secret_and_service_exist_before_the_job_and_no_pod_waits_for_them(
    cluster: Cluster, team: str
) -> None:
    # The API server's resourceVersion is one counter for every write: a creation's version is its place in
    # the commit order, across kinds (as etcd's revision is on a real cluster).
    since = cluster.core.list_namespaced_config_map(team).metadata.resource_version
    faults = cluster.sandbox.server.faults
    late_configmap = faults.add(method="POST", path_regex=rf"^/api/v1/namespaces/{team}/configmaps(\?|$)", times=None)
    try:
        cluster.apply(finetunejob("ordered", team))
        wait_for(lambda: late_configmap.hits, 60, interval=0.02, message="a refused ConfigMap create")
        time.sleep(REFUSE_FOR)
    finally:
        faults.rules.remove(late_configmap)
    wait_for(lambda: all_children_exist(cluster, team), 60, message="the run's four children")
    created = creation_versions(cluster, team, since)
    job = created[("Job", "ordered")]
    # What the pods mount; the Service (the trainers' rendezvous, seconds later) is sent with the Job.
    for child in [("ConfigMap", "ordered-config"), ("Secret", "ordered-progress")]:
        assert created[child] < job, f"{child} created at resourceVersion {created[child]}, after the Job at {job}"

    status = cluster.wait_phase(team, "ordered", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status

    # What the kubelet said about the run's pods: no mount ever failed, no container ever lacked its config.
    pods = {pod.metadata.name for pod in cluster.pods(team, "ordered")}
    assert pods
    kubelet_warnings = [
        f"{e.reason}: {e.message} (x{e.count})"
        for e in cluster.core.list_namespaced_event(team).items
        if e.involved_object.kind == "Pod"
        and e.involved_object.name in pods
        and (e.reason == "FailedMount" or (e.reason == "Failed" and (e.message or "").startswith("Error:")))
    ]
    assert kubelet_warnings == []

    # Every status the pods ever had (the API server's history of them): never waiting on a missing reference.
    waits = set()
    for event in watch_history(cluster, f"/api/v1/namespaces/{team}/pods", since):
        status_ = event["object"].get("status") or {}
        for container in status_.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            waits.add(waiting.get("reason"))
    assert "CreateContainerConfigError" not in waits, waits
