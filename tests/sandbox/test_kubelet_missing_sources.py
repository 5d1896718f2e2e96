"""A pod that meets a ConfigMap or Secret that does not exist yet, on the sandbox's kubelet, as on a real node:
it stays Pending in ContainerCreating (volumes) or CreateContainerConfigError (env), Warning events say why
(repeats counted on one Event), and it is retried with the kubelet's back-off, not polled."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from finetune_sandbox.kubelet.mount_backoff import attempt_times, duration_before_retry
from kubelet_harness import NS, phase_is, running_kubelet, wait_pod

# Seconds of slack for a loaded machine (2 shared cores): how late an observed step may be.
LATE = 1.5


@pytest.fixture
async def env(tmp_path):
    # Real mount back-off (0.5 s doubling); a short pod-sync back-off so the env tests do not wait 10-15 s.
    async with running_kubelet(tmp_path, sync_backoff_seconds=0.4, mount_timeout_seconds=123.0) as (client, kubelet):
        yield client, kubelet


def pod(name: str, code: str, *, container: dict | None = None, volumes: list | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "nodeName": "sandbox",
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "img:1", "command": ["python", "-c", code], **(container or {})}],
            "volumes": volumes or [],
        },
    }


async def pod_events(client, name: str, reason: str | None = None) -> list[dict]:
    items = (await client.list("v1", "events", NS))["items"]
    return [
        e
        for e in items
        if e["involvedObject"].get("kind") == "Pod"
        and e["involvedObject"]["name"] == name
        and (reason is None or e["reason"] == reason)
    ]


async def wait_events(client, name: str, reason: str, check, timeout: float = 15.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        events = await pod_events(client, name, reason)
        if check(events):
            return events
        assert time.monotonic() < deadline, f"no {reason} events as expected for {name}: {events}"
        await asyncio.sleep(0.02)


def waiting_reason(current) -> str | None:
    statuses = ((current or {}).get("status") or {}).get("containerStatuses") or [{}]
    return (statuses[0].get("state") or {}).get("waiting", {}).get("reason")


def started(current) -> bool:
    statuses = ((current or {}).get("status") or {}).get("containerStatuses") or [{}]
    state = statuses[0].get("state") or {}
    return "running" in state or "terminated" in state


async def test_a_late_configmap_volume_waits_in_container_creating_with_failed_mount_events_then_starts_at_the_next_retry(
    env,
):
    client, _ = env
    volumes = [{"name": "config", "configMap": {"name": "late-cfg"}}]
    code = "import pathlib; print(pathlib.Path('/etc/cfg/lr').read_text())"
    container = {"volumeMounts": [{"name": "config", "mountPath": "/etc/cfg"}]}
    await client.create("v1", "pods", NS, pod("late", code, container=container, volumes=volumes))

    # When each failed attempt shows up (the Event's count growing): four of them, at 0, 0.5, 1.5 and 3.5 s.
    seen: list[float] = []
    first_name = None
    while len(seen) < 4:
        events = await pod_events(client, "late", "FailedMount")
        if events:
            first_name = first_name or events[0]["metadata"]["name"]
            seen += [time.monotonic()] * (events[0]["count"] - len(seen))
        assert len(seen) < 5, "the ConfigMap must appear before the fifth attempt"
        await asyncio.sleep(0.01)
    gaps = [later - earlier for earlier, later in zip(seen, seen[1:])]
    # Each retry waits out its back-off (0.5, 1, 2 s): a poll at a fixed interval would not.
    for gap, expected in zip(gaps, [0.5, 1.0, 2.0]):
        assert expected - 0.15 <= gap <= expected + LATE, gaps

    waiting = await client.get("v1", "pods", NS, "late")
    assert waiting["status"]["phase"] == "Pending"
    assert waiting_reason(waiting) == "ContainerCreating"
    assert "message" not in waiting["status"]["containerStatuses"][0]["state"]["waiting"]  # as upstream: none
    (event,) = await pod_events(client, "late", "FailedMount")  # one Event, its repeats counted
    assert event["metadata"]["name"] == first_name
    assert event["type"] == "Warning"
    assert event["message"] == 'MountVolume.SetUp failed for volume "config" : configmap "late-cfg" not found'
    assert event["involvedObject"]["uid"] == waiting["metadata"]["uid"]
    assert event["source"] == {"component": "kubelet", "host": "sandbox"}

    await client.create("v1", "configmaps", NS, {"metadata": {"name": "late-cfg"}, "data": {"lr": "0.001"}})
    created = time.monotonic()
    await wait_pod(client, "late", started, timeout=30)
    started_at = time.monotonic()

    (event,) = await pod_events(client, "late", "FailedMount")
    failures = event["count"]
    assert failures == 4, "the ConfigMap appeared while the fifth attempt waited its 4 s"
    # The pod starts at the retry the back-off scheduled after the last failure: not sooner (no poll), and
    # within one back-off interval of the ConfigMap's creation.
    assert started_at - seen[-1] >= duration_before_retry(failures) - 0.15, started_at - seen[-1]
    assert started_at - created <= duration_before_retry(failures) + LATE, started_at - created
    assert started_at - seen[0] <= attempt_times(failures + 1)[-1] + LATE

    done = await wait_pod(client, "late", phase_is("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    assert "0.001" in await client.logs(NS, "late")


async def test_each_missing_volume_fails_on_its_own_and_names_its_secret_or_configmap(env):
    client, _ = env
    volumes = [
        {"name": "config", "configMap": {"name": "cfg"}},
        {"name": "token", "secret": {"secretName": "tok"}},
        {"name": "keys", "configMap": {"name": "cfg", "items": [{"key": "absent", "path": "a"}]}},
        {"name": "maybe", "secret": {"secretName": "nope", "optional": True}},
        {"name": "scratch", "emptyDir": {}},
    ]
    await client.create("v1", "pods", NS, pod("two", "print('ok')", volumes=volumes))
    await wait_events(client, "two", "FailedMount", lambda events: len(events) >= 3)
    messages = {e["message"] for e in await pod_events(client, "two", "FailedMount")}
    assert messages == {
        'MountVolume.SetUp failed for volume "config" : configmap "cfg" not found',
        'MountVolume.SetUp failed for volume "token" : secret "tok" not found',
        'MountVolume.SetUp failed for volume "keys" : configmap "cfg" not found',
    }

    # The ConfigMap appears without the key one volume names: that volume still fails, now for the key.
    await client.create("v1", "configmaps", NS, {"metadata": {"name": "cfg"}, "data": {"lr": "1"}})
    await wait_events(
        client,
        "two",
        "FailedMount",
        lambda events: any("configmap references non-existent config key: absent" in e["message"] for e in events),
    )
    assert waiting_reason(await client.get("v1", "pods", NS, "two")) == "ContainerCreating"

    await client.patch("v1", "configmaps", NS, "cfg", {"data": {"absent": "here"}})
    secret = {"metadata": {"name": "tok"}, "data": {"t": base64.b64encode(b"x").decode()}}
    await client.create("v1", "secrets", NS, secret)
    done = await wait_pod(client, "two", phase_is("Succeeded", "Failed"), timeout=30)
    assert done["status"]["phase"] == "Succeeded"


async def test_a_missing_env_secret_waits_with_create_container_config_error_and_a_failed_event(env):
    client, _ = env
    container = {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]}
    await client.create("v1", "pods", NS, pod("envy", "import os; print('T=' + os.environ['T'])", container=container))

    events = await wait_events(client, "envy", "Failed", lambda events: events and events[0]["count"] >= 2)
    (event,) = events
    assert event["type"] == "Warning"
    assert event["message"].startswith('Error: secret "later" not found')
    assert event["involvedObject"]["fieldPath"] == "spec.containers{main}"
    current = await client.get("v1", "pods", NS, "envy")
    assert (current["status"]["phase"], waiting_reason(current)) == ("Pending", "CreateContainerConfigError")
    assert not await pod_events(client, "envy", "FailedMount")  # its volumes were fine

    secret = {"metadata": {"name": "later"}, "data": {"k": base64.b64encode(b"v1").decode()}}
    await client.create("v1", "secrets", NS, secret)
    done = await wait_pod(client, "envy", phase_is("Succeeded", "Failed"), timeout=30)
    assert done["status"]["phase"] == "Succeeded"
    assert "T=v1" in await client.logs(NS, "envy")


async def test_a_pod_waiting_for_its_mounts_is_deleted_at_once(env):
    client, _ = env
    volumes = [{"name": "config", "configMap": {"name": "never"}}]
    await client.create("v1", "pods", NS, pod("gone", "print(1)", volumes=volumes))
    await wait_events(client, "gone", "FailedMount", lambda events: events)
    begun = time.monotonic()
    await client.delete("v1", "pods", NS, "gone")
    await wait_pod(client, "gone", lambda current: current is None, timeout=10)
    assert time.monotonic() - begun < 5


async def test_the_wait_for_mounts_times_out_with_unable_to_attach_or_mount(tmp_path):
    options = {"mount_timeout_seconds": 0.6, "sync_backoff_seconds": 0.2}
    async with running_kubelet(tmp_path, **options) as (client, _):
        volumes = [{"name": "config", "configMap": {"name": "never"}}, {"name": "scratch", "emptyDir": {}}]
        await client.create("v1", "pods", NS, pod("stuck", "print(1)", volumes=volumes))

        def timed_out(events):
            return any(e["message"].startswith("Unable to attach or mount volumes") for e in events)

        events = await wait_events(client, "stuck", "FailedMount", timed_out)
        (timeout_event,) = [e for e in events if e["message"].startswith("Unable")]
        assert timeout_event["message"] == (
            "Unable to attach or mount volumes: unmounted volumes=[config], unattached volumes=[], "
            "failed to process volumes=[]: context deadline exceeded"
        )
        # After the sync back-off the pod waits again, and the ConfigMap still lets it start.
        await client.create("v1", "configmaps", NS, {"metadata": {"name": "never"}, "data": {}})
        done = await wait_pod(client, "stuck", phase_is("Succeeded", "Failed"), timeout=30)
        assert done["status"]["phase"] == "Succeeded"
