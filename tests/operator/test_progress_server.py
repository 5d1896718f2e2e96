"""The progress endpoint and /metrics over real HTTP (aiohttp test server): auth, limits, schema,
throttled status writes, and per-job series that vanish with their job."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timezone

import pytest
from aiohttp.test_utils import TestClient, TestServer
from finetune_operator.metrics import OperatorMetrics
from finetune_operator.progress.hub import ProgressHub, job_token
from finetune_operator.progress.report import parse_report
from finetune_operator.progress.server import RateLimiter, metrics_app, progress_app
from finetune_operator.registry import JobRegistry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
KEY = b"k" * 32
URL = "/progress/v1/namespaces/team-a/finetunejobs/sentiment"


def body(step=10, total=100, **extra):
    return json.dumps({"time": "2026-11-28T12:00:00Z", "event": "log", "step": step, "totalSteps": total, **extra})


def make_hub(writes, interval=0.05, trial_reported=None):
    registry = JobRegistry()
    hub = ProgressHub(
        KEY,
        registry,
        lambda ns, name, fields: writes.append((ns, name, fields)),
        OperatorMetrics(registry.all),
        status_interval=interval,
        clock=lambda: NOW,
        trial_reported=trial_reported,
    )
    registry.track("team-a", "sentiment", uid="uid-1", created=NOW, gpus=2, gpu_seconds=0)
    return hub


def forget(hub, namespace, name):
    """What the operator does when a FineTuneJob is deleted (OperatorState.forget), minus the API client."""
    hub.forget(hub.registry.forget(namespace, name))


def auth(token=None):
    return {"Authorization": f"Bearer {token or job_token(KEY, 'team-a', 'sentiment', 'uid-1')}"}


@pytest.fixture
async def served():
    writes: list = []
    hub = make_hub(writes)
    client = TestClient(TestServer(progress_app(hub)))
    metrics = TestClient(TestServer(metrics_app(hub)))
    await client.start_server()
    await metrics.start_server()
    yield client, metrics, hub, writes
    await client.close()
    await metrics.close()
    await hub.close()


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_accepted_report_reaches_status_and_metrics_from_the_same_record(served):
    client, metrics, hub, writes = served
    response = await client.post(URL, data=body(step=25, loss=0.5, samplesPerSecond=8.0), headers=auth())
    assert response.status == 204
    await asyncio.sleep(0.1)
    assert writes and writes[-1][2]["progress"]["step"] == 25
    assert writes[-1][2]["progress"]["percent"] == 25
    text = await (await metrics.get("/metrics")).text()
    series = families(text)
    step = next(
        s
        for s in series["finetune_operator_job_step"].samples
        if s.labels == {"namespace": "team-a", "name": "sentiment"}
    )
    assert step.value == 25
    assert series["finetune_operator_job_progress_ratio"].samples[0].value == 0.25
    accepted = [
        s
        for s in series["finetune_operator_progress_reports"].samples
        if s.name.endswith("_total") and s.labels["result"] == "accepted"
    ]
    assert accepted[0].value == 1


async def test_status_writes_are_throttled_per_job_but_the_newest_report_lands(served):
    client, _, hub, writes = served
    hub.status_interval = 0.3
    for step in range(1, 6):
        assert (await client.post(URL, data=body(step=step), headers=auth())).status == 204
    await asyncio.sleep(0.05)
    assert len(writes) == 1  # the first one, at once
    await asyncio.sleep(0.4)
    assert len(writes) == 2
    assert writes[-1][2]["progress"]["step"] == 5


async def test_a_slow_api_server_gets_one_write_per_job_at_a_time_and_then_the_newest_report():
    # 10,000 jobs ask for 667 writes a second; an API server that answers slower must not make writes
    # pile up in the operator's memory (docs/scaling.md): one waits per job, carrying the newest report.
    release, started, writes = threading.Event(), threading.Event(), []

    def slow_write(namespace, name, fields):
        started.set()
        release.wait(10)
        writes.append(fields["progress"]["step"])

    registry = JobRegistry()
    hub = ProgressHub(KEY, registry, slow_write, OperatorMetrics(registry.all), status_interval=0.01, clock=lambda: NOW)
    record = registry.track("team-a", "sentiment", uid="uid-1", created=NOW, gpus=0, gpu_seconds=0)
    token = job_token(KEY, "team-a", "sentiment", "uid-1")
    try:
        assert hub.accept("team-a", "sentiment", token, parse_report(body(step=1).encode())) == (204, "Accepted")
        await asyncio.to_thread(started.wait, 10)
        for step in range(2, 50):
            hub.accept("team-a", "sentiment", token, parse_report(body(step=step).encode()))
            await asyncio.sleep(0.002)  # many intervals pass while the first write hangs
        sent = hub.metrics.status_writes.labels("progress")._value.get()
        assert sent == 1, f"{sent} writes were sent while the first was unanswered"
        release.set()
        for _ in range(200):
            if writes[-1:] == [49]:
                break
            await asyncio.sleep(0.01)
        assert writes == [1, 49]
        assert record.report.step == 49
    finally:
        release.set()
        await hub.close()


@pytest.mark.parametrize(
    ("headers", "url", "status"),
    [
        ({}, URL, 401),
        ({"Authorization": "Basic abc"}, URL, 401),
        ({"Authorization": "Bearer " + "0" * 64}, URL, 403),
        ({"Authorization": "Bearer " + job_token(KEY, "team-b", "sentiment", "uid-1")}, URL, 403),
        (None, "/progress/v1/namespaces/team-a/finetunejobs/unknown", 404),
    ],
    ids=["no-token", "not-bearer", "wrong-token", "other-jobs-token", "unknown-job"],
)
async def test_a_report_is_accepted_only_with_its_own_jobs_token(served, headers, url, status):
    client, _, _, writes = served
    response = await client.post(url, data=body(), headers=auth() if headers is None else headers)
    assert response.status == status
    assert "reason" in await response.json()
    assert writes == []


async def test_oversized_and_malformed_bodies_are_refused(served):
    client, _, _, writes = served
    big = await client.post(URL, data=b"{" + b" " * 20000 + b"}", headers=auth())
    assert big.status == 413
    bad = await client.post(URL, data=body(step=-5), headers=auth())
    assert bad.status == 400
    assert "step" in (await bad.json())["message"]
    assert writes == []


async def test_a_flood_from_one_job_is_rate_limited():
    writes: list = []
    hub = make_hub(writes)
    ticks = iter(range(1000))
    client = TestClient(
        TestServer(progress_app(hub, RateLimiter(rate=1.0, burst=3.0, clock=lambda: next(ticks) * 0.01)))
    )
    await client.start_server()
    try:
        statuses = [(await client.post(URL, data=body(step=i), headers=auth())).status for i in range(6)]
    finally:
        await client.close()
        await hub.close()
    assert statuses[:3] == [204, 204, 204]
    assert 429 in statuses[3:]


async def test_a_deleted_jobs_series_disappear(served):
    client, metrics, hub, _ = served
    await client.post(URL, data=body(step=3), headers=auth())
    assert 'name="sentiment"' in await (await metrics.get("/metrics")).text()
    forget(hub, "team-a", "sentiment")
    text = await (await metrics.get("/metrics")).text()
    assert 'name="sentiment"' not in text
    assert "finetune_operator_jobs" in text


async def test_jobs_by_phase_are_counted_at_scrape_time(served):
    _, metrics, hub, _ = served
    hub.registry.track("team-a", "other", uid="u2", created=NOW, gpus=0, gpu_seconds=0).phase = "Running"
    hub.registry.get("team-a", "sentiment").phase = "Running"
    series = families(await (await metrics.get("/metrics")).text())
    by_phase = {s.labels["phase"]: s.value for s in series["finetune_operator_jobs"].samples}
    assert by_phase["Running"] == 2 and by_phase["Failed"] == 0


async def test_a_trials_reports_reconcile_its_search_instead_of_writing_a_status():
    writes: list = []
    reconciled: list = []

    async def trial_reported(namespace, search):
        reconciled.append((namespace, search))

    hub = make_hub(writes, trial_reported=trial_reported)
    client = TestClient(TestServer(progress_app(hub)))
    metrics = TestClient(TestServer(metrics_app(hub)))
    await client.start_server()
    await metrics.start_server()
    try:
        await _trial_reports_reconcile_the_search(client, metrics, hub, writes, reconciled)
    finally:
        await client.close()
        await metrics.close()
        await hub.close()


async def _trial_reports_reconcile_the_search(client, metrics, hub, writes, reconciled):
    hub.registry.track("team-a", "sentiment-t0", uid="uid-1", created=NOW, gpus=1, gpu_seconds=0, parent="sentiment")
    token = job_token(KEY, "team-a", "sentiment-t0", "uid-1")
    response = await client.post(
        "/progress/v1/namespaces/team-a/finetunejobs/sentiment-t0",
        data=body(step=4, event="evaluate", evalMetrics={"eval_loss": 0.5}),
        headers=auth(token),
    )
    assert response.status == 204
    await asyncio.sleep(0.2)
    # status.trials has one writer (the search's reconcile): the trial's report only triggers it.
    assert reconciled == [("team-a", "sentiment")] and writes == []
    assert hub.registry.jobs() == [("team-a", "sentiment")]  # the sweep reconciles the search, not its trials
    hub.registry.get("team-a", "sentiment").trial_counts = {"Running": 1, "Succeeded": 2}
    hub.registry.get("team-a", "sentiment").best_objective = ("eval_loss", 0.25)
    series = families(await (await metrics.get("/metrics")).text())
    # Per-trial series are the jobs' series; the search adds trials by state and its best value.
    assert [s.value for s in series["finetune_operator_job_step"].samples if s.labels["name"] == "sentiment-t0"] == [4]
    by_state = {s.labels["state"]: s.value for s in series["finetune_operator_search_trials"].samples}
    assert by_state == {"Running": 1, "Succeeded": 2}
    assert [(s.labels["metric"], s.value) for s in series["finetune_operator_search_best_objective"].samples] == [
        ("eval_loss", 0.25)
    ]
    # Trials are not FineTuneJobs: jobs-by-phase counts the search only.
    assert sum(s.value for s in series["finetune_operator_jobs"].samples) == 1
    forget(hub, "team-a", "sentiment")
    assert hub.registry.get("team-a", "sentiment-t0") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
report_keys = st.sampled_from(
    ["time", "event", "step", "totalSteps", "epoch", "loss", "evalMetrics", "checkpoint", "gpu", "pod", "x"]
)


@pytest.fixture
async def unlimited():
    """The endpoint without its rate limit, so every generated body reaches the parser."""
    hub = make_hub([])
    client = TestClient(TestServer(progress_app(hub, RateLimiter(rate=1e9, burst=1e9))))
    await client.start_server()
    yield client
    await client.close()
    await hub.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(report_keys, json_values, max_size=8).map(lambda d: json.dumps(d).encode()),
    )
)
async def test_no_input_makes_the_endpoint_answer_5xx(unlimited, payload):
    response = await unlimited.post(URL, data=payload, headers=auth())
    assert response.status in (204, 400, 413)
