"""Pods the API server refuses: the Job controller's FailedCreate events, its retries on the rate limiter, and
pods created once the cause is gone (upstream: pkg/controller/job/job_controller.go `manageJob`,
pkg/controller/controller_utils.go `createPods`, client-go tools/record)."""

from __future__ import annotations

import asyncio
import re

import pytest
from async_wait import eventually
from finetune_sandbox.apiserver import ApiServer
from finetune_sandbox.client import ApiError, SandboxClient
from finetune_sandbox.conditions import utcnow
from finetune_sandbox.jobs import JobController
from finetune_sandbox.jobs.backoff import ItemBackoff
from finetune_sandbox.jobs.events import COMBINED_PREFIX, EventRecorder, object_reference
from finetune_sandbox.jobs.plan import build_pod

NS = "default"


@pytest.fixture
async def server():
    server = ApiServer(host="127.0.0.1", port=0, graceful_pod_deletion=False, gc_interval=0.1)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(server):
    async with SandboxClient(server.url) as client:
        yield client


@pytest.fixture
async def controller(client):
    # Fast retries so the tests take seconds; the shape (doubling, capped) is upstream's.
    controller = JobController(client, api_backoff=0.1, max_api_backoff=0.4, batch_period=0.1)
    task = asyncio.create_task(controller.run())
    yield controller
    await controller.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def job(name: str, *, indexed: bool = False, parallelism: int = 1, **pod_spec) -> dict:
    spec = {
        "parallelism": parallelism,
        "completions": parallelism,
        "backoffLimit": 0,
        "template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "img"}], **pod_spec}
        },
    }
    if indexed:
        spec["completionMode"] = "Indexed"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS}, "spec": spec}


async def events(client, job: dict, reason: str) -> list[dict]:
    selector = f"involvedObject.uid={job['metadata']['uid']},reason={reason}"
    return (await client.list("v1", "events", NS, field_selector=selector))["items"]


async def pods(client, name: str) -> list[dict]:
    return (await client.list("v1", "pods", NS, label_selector=f"batch.kubernetes.io/job-name={name}"))["items"]


async def test_a_missing_priority_class_is_one_failed_create_event_counting_retries(client, controller):
    created = await client.create("batch/v1", "jobs", NS, job("train", indexed=True, priorityClassName="gpu-high"))

    async def repeated():
        found = await events(client, created, "FailedCreate")
        return found if found and found[0]["count"] >= 3 else None

    [event] = await eventually(repeated, "three refusals counted on one event")
    assert event["type"] == "Warning"
    assert (
        event["message"]
        == 'Error creating: pods "train-0-" is forbidden: no PriorityClass with name gpu-high was found'
    )
    assert event["involvedObject"]["kind"] == "Job" and event["involvedObject"]["name"] == "train"
    assert event["source"] == {"component": "job-controller"} and event["reportingComponent"] == "job-controller"
    assert event["firstTimestamp"] <= event["lastTimestamp"]
    status = (await client.get("batch/v1", "jobs", NS, "train"))["status"]
    assert (status["active"], status["failed"]) == (0, 0)  # refused pods never existed
    assert await pods(client, "train") == []
    assert controller.backoff.failures((NS, "train")) >= 2

    # The class appears: the next retry creates the pod, with the class's priority, and the back-off is forgotten.
    await client.create(
        "scheduling.k8s.io/v1", "priorityclasses", None, {"metadata": {"name": "gpu-high"}, "value": 1000}
    )
    [pod] = await eventually(lambda: pods(client, "train"), "the pod, once its PriorityClass exists")
    assert pod["spec"]["priority"] == 1000
    assert pod["metadata"]["generateName"] == "train-0-" and re.fullmatch(
        r"train-0-[a-z0-9]{5}", pod["metadata"]["name"]
    )
    [success] = await eventually(lambda: events(client, created, "SuccessfulCreate"), "SuccessfulCreate")
    assert success["message"] == f"Created pod: {pod['metadata']['name']}" and success["type"] == "Normal"
    await eventually(lambda: _active(client, "train", 1), "status.active 1")
    assert controller.backoff.failures((NS, "train")) == 0


async def _active(client, name: str, expected: int) -> bool:
    return (await client.get("batch/v1", "jobs", NS, name)).get("status", {}).get("active") == expected


async def test_a_full_quota_refuses_pods_until_it_is_raised(client, controller):
    await client.create("v1", "resourcequotas", NS, {"metadata": {"name": "tiny"}, "spec": {"hard": {"pods": "0"}}})
    created = await client.create("batch/v1", "jobs", NS, job("sentiment"))
    first = (await eventually(lambda: events(client, created, "FailedCreate"), "FailedCreate"))[0]
    assert re.fullmatch(
        r'Error creating: pods "sentiment-[a-z0-9]{5}" is forbidden: exceeded quota: tiny, requested: pods=1, '
        r"used: pods=0, limited: pods=0",
        first["message"],
    ), first["message"]
    # Each retry asks for a pod with a new generated name: a new message, so a new event (until 10 of them are
    # combined into one, as client-go's aggregator does).
    await eventually(lambda: _at_least(events(client, created, "FailedCreate"), 2), "a second refusal")

    await client.patch("v1", "resourcequotas", NS, "tiny", {"spec": {"hard": {"pods": "1"}}})
    [pod] = await eventually(lambda: pods(client, "sentiment"), "the pod, once the quota has room")
    await eventually(lambda: _active(client, "sentiment", 1), "status.active 1")
    status = (await client.get("batch/v1", "jobs", NS, "sentiment"))["status"]
    assert status["failed"] == 0
    quota = await client.get("v1", "resourcequotas", NS, "tiny")
    assert quota["status"]["used"] == {"pods": "1"}


async def _at_least(listing, count: int):
    found = await listing
    return found if len(found) >= count else None


async def test_slow_start_stops_after_a_batch_with_a_refusal(client, controller):
    await client.create("v1", "resourcequotas", NS, {"metadata": {"name": "one"}, "spec": {"hard": {"pods": "1"}}})
    created = await client.create("batch/v1", "jobs", NS, job("wide", indexed=True, parallelism=3))
    await eventually(lambda: _at_least(events(client, created, "FailedCreate"), 2), "the second batch refused")
    assert len(await pods(client, "wide")) == 1  # the first batch (1 pod) went through, the second (2) did not
    await eventually(lambda: _active(client, "wide", 1), "status.active 1")
    messages = [e["message"] for e in await events(client, created, "FailedCreate")]
    assert all("exceeded quota: one, requested: pods=1, used: pods=1, limited: pods=1" in m for m in messages)


class RefusingClient:
    """Answers every pod create with `error`; records what else is asked."""

    def __init__(self, error: ApiError) -> None:
        self.error = error
        self.created: list[tuple[str, dict]] = []

    async def create(self, api_version, plural, namespace, body):
        if plural == "pods":
            raise self.error
        self.created.append((plural, body))
        return body


async def test_a_namespace_being_deleted_is_no_reason_for_an_event_or_a_retry():
    terminating = ApiError(
        403,
        "Forbidden",
        'pods "Pod" is forbidden: unable to create new content in namespace going because it is being terminated',
        {"details": {"causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}]}},
    )
    fake = RefusingClient(terminating)
    controller = JobController(fake)
    body = job("late")
    body["metadata"]["uid"] = "u1"
    created, refused = await controller._create_pods(body, [build_pod(body, None, "abcde")])
    assert (created, refused, fake.created) == (0, 0, [])

    fake.error = ApiError(500, "InternalError", "etcd is sad", {})
    created, refused = await controller._create_pods(body, [build_pod(body, None, "abcde")])
    assert (created, refused) == (0, 1)
    [(plural, event)] = fake.created
    assert (plural, event["reason"], event["message"]) == ("events", "FailedCreate", "Error creating: etcd is sad")


def test_the_rate_limiter_doubles_to_its_cap_and_forgets():
    backoff = ItemBackoff()
    assert [backoff.when("k") for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff.failures("k") == 8
    backoff.forget("k")
    assert backoff.when("k") == 1


class Clock:
    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


async def test_ten_similar_messages_become_one_combined_event(client, server):
    clock = Clock()
    recorder = EventRecorder(client, "job-controller", now=utcnow, monotonic=clock)
    target = await client.create("v1", "configmaps", NS, {"metadata": {"name": "target"}})
    involved = object_reference(target)
    for i in range(12):
        await recorder.record(involved, "Warning", "FailedCreate", f"Error creating: pod {i}")
    listing = (await client.list("v1", "events", NS))["items"]
    single = sorted(e["message"] for e in listing if not e["message"].startswith(COMBINED_PREFIX))
    combined = [e for e in listing if e["message"].startswith(COMBINED_PREFIX)]
    assert single == sorted(f"Error creating: pod {i}" for i in range(9))
    assert len(combined) == 1
    assert (combined[0]["count"], combined[0]["message"]) == (3, COMBINED_PREFIX + "Error creating: pod 11")


async def test_the_spam_filter_holds_back_a_burst_but_keeps_counting(client, server):
    clock = Clock()
    recorder = EventRecorder(client, "job-controller", now=utcnow, monotonic=clock)
    target = await client.create("v1", "configmaps", NS, {"metadata": {"name": "target"}})
    involved = object_reference(target)
    for _ in range(30):
        await recorder.record(involved, "Warning", "FailedCreate", "Error creating: same")
    [event] = (await client.list("v1", "events", NS))["items"]
    assert event["count"] == 25  # the burst; five more were counted but not posted
    clock.value += 300.0  # one token back
    await recorder.record(involved, "Warning", "FailedCreate", "Error creating: same")
    [event] = (await client.list("v1", "events", NS))["items"]
    assert event["count"] == 31
