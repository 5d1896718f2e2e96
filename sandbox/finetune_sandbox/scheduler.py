"""The sandbox's scheduler: one Node, counted extended resources (fake GPUs), real scheduler wording.

CPU and memory requests never block a pod (a laptop's numbers say little); extended resources such as
`nvidia.com/gpu` do, so tests and demos can see pods wait for GPUs exactly as on a cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from .client import ApiError, SandboxClient, retry_on_conflict
from .conditions import find_condition, format_time, set_condition, utcnow

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER = "default-scheduler"
# Resources a laptop cannot promise: never block on them.
NOT_BLOCKING = {"cpu", "memory", "ephemeral-storage", "pods"}
_SUFFIXES = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity ("2", "500m", "16Gi", "1e3") as a number."""
    text = str(value).strip()
    try:
        for suffix in sorted(_SUFFIXES, key=len, reverse=True):
            if suffix and text.endswith(suffix):
                return Decimal(text[: -len(suffix)]) * _SUFFIXES[suffix]
        return Decimal(text)
    except ArithmeticError as error:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. '2', '500m', '16Gi')") from error


def pod_requests(pod: dict) -> dict[str, Decimal]:
    """Effective requests: max(sum over containers, any init container); limits stand in for missing requests."""

    def of(container: dict) -> dict[str, Decimal]:
        resources = container.get("resources") or {}
        merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return {name: parse_quantity(amount) for name, amount in merged.items()}

    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for name, amount in of(container).items():
            total[name] = total.get(name, Decimal(0)) + amount
    for container in spec.get("initContainers") or []:
        for name, amount in of(container).items():
            total[name] = max(total.get(name, Decimal(0)), amount)
    return total


def is_finished(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_ours_to_schedule(pod: dict) -> bool:
    spec = pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and spec.get("schedulerName", DEFAULT_SCHEDULER) in ("", DEFAULT_SCHEDULER)
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
        and not is_finished(pod)
    )


@dataclass
class Decision:
    fits: bool
    message: str = ""


def schedule_decision(pod: dict, node: dict, bound_pods: list[dict]) -> Decision:
    """Can `pod` go on `node`, given the pods already bound there? Message as the real scheduler words it."""
    node_labels = (node.get("metadata") or {}).get("labels") or {}
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    if any(node_labels.get(key) != value for key, value in selector.items()):
        return Decision(False, "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.")
    allocatable = {
        name: parse_quantity(amount) for name, amount in ((node.get("status") or {}).get("allocatable") or {}).items()
    }
    used: dict[str, Decimal] = {}
    for other in bound_pods:
        if is_finished(other):
            continue
        for name, amount in pod_requests(other).items():
            used[name] = used.get(name, Decimal(0)) + amount
    insufficient = sorted(
        name
        for name, amount in pod_requests(pod).items()
        if name not in NOT_BLOCKING
        and amount > 0
        and amount > allocatable.get(name, Decimal(0)) - used.get(name, Decimal(0))
    )
    if insufficient:
        reasons = ", ".join(f"1 Insufficient {name}" for name in insufficient)
        return Decision(False, f"0/1 nodes are available: {reasons}.")
    return Decision(True)


def build_node(name: str, capacity: dict[str, str | int], labels: dict[str, str] | None = None) -> dict:
    amounts = {key: str(value) for key, value in capacity.items()}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **(labels or {}),
            },
        },
        "spec": {},
        "status": node_status(amounts),
    }


def node_status(amounts: dict[str, str]) -> dict:
    now = format_time(utcnow())
    return {
        "capacity": amounts,
        "allocatable": amounts,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "sandbox process kubelet is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            },
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "localhost"}],
        "nodeInfo": {
            "kubeletVersion": "v1.31.0-sandbox",
            "containerRuntimeVersion": "process://sandbox",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


class Scheduler:
    """Binds pending pods to the one sandbox Node when their extended resources fit."""

    def __init__(
        self,
        client: SandboxClient,
        node_name: str = "sandbox",
        capacity: dict[str, str | int] | None = None,
        *,
        node_labels: dict[str, str] | None = None,
        now: Callable = utcnow,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.capacity = dict(capacity or {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": 0, "pods": "110"})
        self.node_labels = node_labels or {}
        self.now = now
        self.node: dict = build_node(node_name, self.capacity, self.node_labels)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def ensure_node(self) -> dict:
        try:
            await self.client.create("v1", "nodes", None, self.node)
        except ApiError as error:
            if error.status != 409:
                raise
        # Status may be dropped on create (status subresource): write it explicitly.
        try:
            self.node = await self.client.patch(
                "v1", "nodes", None, self.node_name, {"status": self.node["status"]}, subresource="status"
            )
        except ApiError as error:
            if error.status not in (404, 405):
                raise
            self.node = await self.client.patch("v1", "nodes", None, self.node_name, {"status": self.node["status"]})
        return self.node

    async def run(self) -> None:
        await self.ensure_node()
        self._tasks = [
            asyncio.create_task(self._watch(), name="scheduler-watch"),
            asyncio.create_task(self._loop(), name="scheduler-loop"),
        ]
        try:
            await asyncio.gather(*self._tasks)
        except asyncio.CancelledError:
            pass

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _watch(self) -> None:
        async for _ in self.client.watch("v1", "pods"):
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.schedule_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep scheduling; the next pod event retries.
                log.exception("scheduling pass failed; retrying in 1s")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def schedule_once(self) -> list[str]:
        """One pass over all pods, oldest first; returns the names bound."""
        pods = (await self.client.list("v1", "pods")).get("items") or []
        bound = [pod for pod in pods if (pod.get("spec") or {}).get("nodeName") == self.node_name]
        pending = sorted(
            (pod for pod in pods if is_ours_to_schedule(pod)),
            key=lambda pod: (pod["metadata"].get("creationTimestamp") or "", pod["metadata"]["name"]),
        )
        bound_now = []
        for pod in pending:
            decision = schedule_decision(pod, self.node, bound)
            meta = pod["metadata"]
            if decision.fits:
                await self._bind(meta["namespace"], meta["name"])
                bound.append({**pod, "spec": {**pod["spec"], "nodeName": self.node_name}})
                bound_now.append(meta["name"])
            else:
                await self._mark_unschedulable(pod, decision.message)
        return bound_now

    async def _bind(self, namespace: str, name: str) -> None:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            await self.client.create_subresource("v1", "pods", namespace, name, "binding", binding)
        except ApiError as error:
            if error.status not in (404, 405):
                raise
            # A server without the binding subresource: set nodeName directly.
            await self.client.patch("v1", "pods", namespace, name, {"spec": {"nodeName": self.node_name}})
        await self._set_scheduled(namespace, name, "True", "", "")

    async def _mark_unschedulable(self, pod: dict, message: str) -> None:
        current = find_condition((pod.get("status") or {}).get("conditions"), "PodScheduled")
        if current and current.get("status") == "False" and current.get("message") == message:
            return
        meta = pod["metadata"]
        await self._set_scheduled(meta["namespace"], meta["name"], "False", "Unschedulable", message)

    async def _set_scheduled(self, namespace: str, name: str, status: str, reason: str, message: str) -> None:
        async def write() -> None:
            pod = await self.client.get("v1", "pods", namespace, name)
            conditions = set_condition(
                (pod.get("status") or {}).get("conditions"),
                "PodScheduled",
                status,
                reason,
                message,
                self.now(),
                probe_time=False,
            )
            if status == "True":
                # The real binding leaves no reason/message on a True PodScheduled.
                conditions = [
                    {k: v for k, v in c.items() if not (c["type"] == "PodScheduled" and k in ("reason", "message"))}
                    for c in conditions
                ]
            patch = {
                "metadata": {"resourceVersion": pod["metadata"].get("resourceVersion")},
                "status": {"conditions": conditions},
            }
            if not (pod.get("status") or {}).get("phase"):
                patch["status"]["phase"] = "Pending"
            await self.client.patch("v1", "pods", namespace, name, patch, subresource="status")

        try:
            await retry_on_conflict(write)
        except ApiError as error:
            if error.status != 404:
                raise
