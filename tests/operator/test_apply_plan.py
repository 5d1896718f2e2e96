"""apply_plan: a Plan carried out against a fake KubeApi that records every call (no sandbox, no Kopf).

What matters here is what the plan types cannot show: the order of the calls (Jobs before anything
else; a search's status before its trials' children), that a failed log read still records the failure,
that records change only once their children went out, and that every metric delta lands.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest
from finetune_operator import reasons as r
from finetune_operator.metrics import OperatorMetrics
from finetune_operator.progress.hub import ProgressHub
from finetune_operator.reconcile.apply import Actuators, apply_plan
from finetune_operator.reconcile.children_first import ChildrenFirst
from finetune_operator.reconcile.plan import Event, MetricDeltas, Plan
from finetune_operator.registry import JobRegistry

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
FTJ = {"metadata": {"name": "ft", "namespace": "ns", "uid": "uid-1"}}


class FakeKube:
    """KubeApi's writes, recorded in order; `fail` makes the named call raise like an API error."""

    def __init__(self, *, log: str | None = "line 1\nTraceback: boom", fail: str | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._log, self._fail = log, fail

    def _call(self, *call: Any) -> None:
        self.calls.append(call)
        if call[0] == self._fail:
            raise OSError(f"{call[0]} failed")

    def create_if_absent(self, manifest: dict[str, Any]) -> bool:
        self._call("create", manifest["kind"], manifest["metadata"]["name"])
        return True

    def patch_finetunejob_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._call("status", name, status)

    def set_job_suspended(self, namespace: str, name: str, suspend: bool) -> None:
        self._call("suspend", name, suspend)

    def delete_job(self, namespace: str, name: str) -> None:
        self._call("delete_job", name)

    def delete_finetunejob(self, namespace: str, name: str) -> None:
        self._call("delete_finetunejob", name)

    def read_log_tail(self, namespace: str, pod: str, container: str, *, lines: int, max_bytes: int) -> str | None:
        self._call("log", pod, container)
        return self._log


def child(kind: str, name: str = "ft") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "ns"}}


def run_children(name: str = "ft") -> list[dict[str, Any]]:
    return [child("ConfigMap", name), child("Secret", name), child("Service", name), child("Job", name)]


@pytest.fixture
async def world():
    registry = JobRegistry()
    registry.track("ns", "ft", uid="uid-1", created=NOW, gpus=2, gpu_seconds=0)
    metrics = OperatorMetrics(registry.all)
    writes: list = []
    hub = ProgressHub(
        b"k" * 32, registry, lambda *a: writes.append(a), metrics, status_interval=0.01, clock=lambda: NOW
    )
    events: list = []

    def actuators(kube: FakeKube) -> Actuators:
        return Actuators(
            kube=kube,
            registry=registry,
            hub=hub,
            metrics=metrics,
            post_event=lambda obj, **event: events.append(event),
            children_first=ChildrenFirst(),
        )

    yield actuators, registry, metrics, events, writes
    await hub.close()


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


async def test_a_jobs_children_go_out_in_dependency_order_then_the_status_then_its_events(world):
    actuators, registry, _, events, _ = world
    kube = FakeKube()
    plan = Plan(
        status={"phase": r.STARTING},
        create=[run_children()],
        events=[Event("Normal", r.POD_PENDING, "Starting: 0 of 1 trainer pods running")],
        remember={"ft": {"children_complete": True}},
    )
    await apply_plan(plan, FTJ, actuators(kube))
    # Nothing a pod mounts may come after its Job: a kubelet would fail the mount and back off. The Service
    # (the rendezvous, seconds later) goes with the Job.
    assert sorted(c[1] for c in kube.calls[0:2]) == ["ConfigMap", "Secret"]
    assert sorted(c[1] for c in kube.calls[2:4]) == ["Job", "Service"]
    assert kube.calls[4] == ("status", "ft", {"phase": r.STARTING})
    assert events == [{"type": "Normal", "reason": r.POD_PENDING, "message": "Starting: 0 of 1 trainer pods running"}]
    assert registry.get("ns", "ft").children_complete is True


async def test_a_search_records_its_trials_before_their_children_and_registers_them_first(world):
    actuators, registry, _, _, _ = world
    kube = FakeKube()
    plan = Plan(
        status={"trials": [{"name": "ft-t0"}]},
        status_first=True,
        create=[run_children("ft-t0")],
        track={"ft-t0": {"uid": "uid-1", "created": NOW, "gpus": 1, "gpu_seconds": 0.0, "parent": "ft"}},
        remember={"ft-t0": {"children_complete": True}},
        delete_jobs=["ft-t9"],
    )
    await apply_plan(plan, FTJ, actuators(kube))
    assert [c[0] for c in kube.calls] == ["status", "create", "create", "create", "create", "delete_job"]
    trial = registry.get("ns", "ft-t0")
    assert trial is not None and trial.parent == "ft" and trial.children_complete


async def test_a_failure_gets_its_pods_log_tail_redacted_and_a_failed_read_still_records_the_failure(world):
    actuators, _, _, _, _ = world
    failure = {"reason": r.TRAINER_CRASHED, "message": "boom", "pod": "ft-0"}
    plan = Plan(status={"phase": r.FAILED, "failure": failure}, log_tail=("failure", "ft-0"))
    kube = FakeKube(log="loading\nAuthorization: Bearer abc.def.ghi\nTraceback: boom")
    await apply_plan(plan, FTJ, actuators(kube))
    [write] = [c for c in kube.calls if c[0] == "status"]
    assert "Traceback: boom" in write[2]["failure"]["logTail"]
    assert "abc.def.ghi" not in write[2]["failure"]["logTail"]
    unreadable = FakeKube(fail="log")
    await apply_plan(plan, FTJ, actuators(unreadable))
    assert [c for c in unreadable.calls if c[0] == "status"] == [("status", "ft", plan.status)]


async def test_children_that_failed_to_go_out_are_not_remembered_as_sent(world):
    actuators, registry, _, _, _ = world
    plan = Plan(status={"phase": r.STARTING}, create=[run_children()], remember={"ft": {"children_complete": True}})
    with pytest.raises(OSError):
        await apply_plan(plan, FTJ, actuators(FakeKube(fail="create")))
    assert registry.get("ns", "ft").children_complete is False  # the retry sends them again


async def test_metric_deltas_land_in_the_operators_metrics(world):
    actuators, _, metrics, _, _ = world
    deltas = MetricDeltas(
        gpu_seconds=120.0, time_to_running=42.0, queue_wait=7.0, failures=[r.OUT_OF_MEMORY], retries=2
    )
    await apply_plan(Plan(metrics=deltas), FTJ, actuators(FakeKube()))
    assert sample(metrics, "finetune_operator_gpu_seconds_total") == 120.0
    assert sample(metrics, "finetune_operator_time_to_running_seconds_sum") == 42.0
    assert sample(metrics, "finetune_operator_queue_wait_seconds_sum") == 7.0
    assert sample(metrics, "finetune_operator_job_failures_total", reason=r.OUT_OF_MEMORY) == 1.0
    assert sample(metrics, "finetune_operator_job_retries_total") == 2.0
    assert sample(metrics, "finetune_operator_status_writes_total", kind="reconcile") == 0.0  # nothing to write


async def test_suspensions_deletions_and_the_ttl_go_out_in_order_with_the_ttl_last(world):
    actuators, _, _, _, _ = world
    kube = FakeKube()
    plan = Plan(status={"phase": r.FAILED}, suspend=[("ft", True)], delete_jobs=["ft"], delete_finetunejob=True)
    await apply_plan(plan, FTJ, actuators(kube))
    assert [c[0] for c in kube.calls] == ["suspend", "delete_job", "status", "delete_finetunejob"]


async def test_progress_writes_are_the_hubs(world):
    actuators, registry, _, _, writes = world
    registry.get("ns", "ft").update(finished=True, completed_progress={"step": 100, "percent": 100})
    act = actuators(FakeKube())
    await apply_plan(Plan(write_progress=["ft"]), FTJ, act)
    await asyncio.sleep(0.1)  # the hub's trailing-edge write (status_interval 0.01 s)
    await act.hub.close()
    assert writes and writes[-1][2]["progress"] == {"step": 100, "percent": 100}


def test_a_plan_cannot_remember_a_field_a_record_does_not_have():
    record = JobRegistry().track("ns", "ft", uid="u", created=NOW, gpus=0, gpu_seconds=0)
    with pytest.raises(AttributeError, match="no field 'stalledd'"):
        record.update(stalledd=True)
