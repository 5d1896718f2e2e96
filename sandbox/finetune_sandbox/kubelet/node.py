"""The sandbox's kubelet: runs the pods bound to its node as local processes, with one of two runtimes.

runtime="process" (the default): each container becomes a process of this Python environment, with its
volumes as local folders and its paths rewritten to them (process_runtime.py).

runtime="image": each container runs from the image its pod names, found in buildah's local storage (never
pulled), chrooted into a working container with its volumes mounted at their real paths (image_runtime/).

`ProcessKubelet` watches pods and keeps one `PodWorker` (pod_worker.py) per pod bound to its node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
from collections.abc import Callable
from pathlib import Path

from ..client import SandboxClient, retry_on_conflict
from ..conditions import set_condition, utcnow
from .events import EventRecorder
from .image_runtime.buildah import Buildah
from .mount_backoff import (
    INITIAL_DURATION_BEFORE_RETRY,
    MAX_DURATION_BEFORE_RETRY,
    POD_ATTACH_AND_MOUNT_TIMEOUT,
    SYNC_BACKOFF_PERIOD,
)
from .pod_worker import DEFAULT_GRACE_SECONDS, PodWorker, delete_now

log = logging.getLogger(__name__)

RegisterLog = Callable[[str, str, str, str], None]
RUNTIMES = ("process", "image")


class ProcessKubelet:
    def __init__(
        self,
        client: SandboxClient,
        data_dir: str | Path,
        node_name: str = "sandbox",
        python: str = sys.executable,
        extra_env: dict[str, str] | None = None,
        register_log: RegisterLog | None = None,
        *,
        restart_backoff_seconds: float = 1.0,
        max_restart_backoff_seconds: float = 30.0,
        now: Callable = utcnow,
        runtime: str = "process",
        buildah: Buildah | None = None,
        mount_backoff_seconds: float = INITIAL_DURATION_BEFORE_RETRY,
        max_mount_backoff_seconds: float = MAX_DURATION_BEFORE_RETRY,
        mount_timeout_seconds: float = POD_ATTACH_AND_MOUNT_TIMEOUT,
        sync_backoff_seconds: float = SYNC_BACKOFF_PERIOD,
        rng: random.Random | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"kubelet runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
        self.runtime = runtime
        # The image runtime's only contact with images: buildah, local storage only.
        self.buildah = buildah or Buildah()
        self.client = client
        self.data_dir = Path(data_dir)
        self.node_name = node_name
        self.python = python
        # Applied last: the sandbox's guarantees (e.g. HF_HUB_OFFLINE=1) win over the pod's env.
        self.extra_env = dict(extra_env or {})
        self.register_log = register_log
        self.restart_backoff_seconds = restart_backoff_seconds
        self.max_restart_backoff_seconds = max_restart_backoff_seconds
        self.now = now
        # The real kubelet's timings (mount_backoff.py): a failed volume mount's retries, the wait for a pod's
        # mounts, and the pod worker's back-off after a failed sync (jittered with `rng`).
        self.mount_backoff_seconds = mount_backoff_seconds
        self.max_mount_backoff_seconds = max_mount_backoff_seconds
        self.mount_timeout_seconds = mount_timeout_seconds
        self.sync_backoff_seconds = sync_backoff_seconds
        self.rng = rng or random.Random()
        # FailedMount, and Failed (CreateContainerConfigError), Warning events on pods, repeats aggregated.
        self.events = EventRecorder(client, node_name, now)
        self.workers: dict[tuple[str, str], PodWorker] = {}
        self._watch_task: asyncio.Task | None = None
        # Image runtime: removals of working containers, outliving the pod workers that started them.
        self._cleanups: set[asyncio.Task] = set()

    async def run(self) -> None:
        self._watch_task = asyncio.current_task()
        try:
            async for kind, pod in self.client.watch("v1", "pods"):
                await self._on_event(kind, pod)
        except asyncio.CancelledError:
            pass

    async def stop(self) -> None:
        """Kill every process at once (SIGKILL to each group) and stop watching."""
        if self._watch_task is not None and self._watch_task is not asyncio.current_task():
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        for worker in list(self.workers.values()):
            await worker.kill()
        self.workers.clear()
        if self._cleanups:
            await asyncio.wait(set(self._cleanups), timeout=30)

    def remove_working_containers(self, names: list[str], processes: list[asyncio.subprocess.Process]) -> None:
        """Remove a pod's working containers once its processes are gone, in a task of the kubelet's own."""

        async def remove() -> None:
            for process in processes:
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(process.wait(), timeout=5)
            for name in names:
                try:
                    await self.buildah.remove(name)
                except Exception:  # noqa: BLE001 - a leftover container is reported, not fatal
                    log.warning("could not remove working container %s", name, exc_info=True)

        task = asyncio.create_task(remove(), name="remove-working-containers")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def disrupt(
        self, namespace: str, pod: str, reason: str = "PreemptionByScheduler", message: str | None = None
    ) -> None:
        """Mark the pod DisruptionTarget=True (as preemption or eviction does), then delete it gracefully."""
        message = message or f"{self.node_name}: preempting to accommodate a higher priority pod"

        async def mark() -> None:
            current = await self.client.get("v1", "pods", namespace, pod)
            conditions = set_condition(
                (current.get("status") or {}).get("conditions"), "DisruptionTarget", "True", reason, message, self.now()
            )
            await self.client.patch(
                "v1",
                "pods",
                namespace,
                pod,
                {
                    "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                    "status": {"conditions": conditions},
                },
                subresource="status",
            )

        await retry_on_conflict(mark)
        await self.client.delete("v1", "pods", namespace, pod)

    async def _on_event(self, kind: str, pod: dict) -> None:
        meta = pod.get("metadata") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        awaiting_confirmation = bool(meta.get("deletionTimestamp")) and meta.get("deletionGracePeriodSeconds") != 0
        if not node and awaiting_confirmation and kind != "DELETED":
            # Never scheduled, so no kubelet will ever confirm its end: the real API server deletes such pods at once.
            await delete_now(self.client, meta.get("namespace", "default"), meta["name"])
            return
        if node != self.node_name:
            return
        key = (meta.get("namespace", "default"), meta["name"])
        worker = self.workers.get(key)
        if worker is not None and worker.uid != meta.get("uid"):
            # Same name, new pod: the old one is gone.
            await worker.kill()
            self.workers.pop(key, None)
            worker = None
        if kind == "DELETED":
            if worker is not None:
                await worker.kill()
                self.workers.pop(key, None)
            return
        if worker is None:
            phase = (pod.get("status") or {}).get("phase")
            if meta.get("deletionTimestamp"):
                # Nothing runs for it (finished, or never started here): confirm the deletion once.
                if awaiting_confirmation:
                    await delete_now(self.client, *key)
                return
            if phase in ("Succeeded", "Failed"):
                return
            worker = PodWorker(self, pod)
            self.workers[key] = worker
            worker.start()
            return
        worker.pod = pod
        if meta.get("deletionTimestamp"):
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
            worker.request_termination(float(grace))

    def forget(self, worker: PodWorker) -> None:
        if self.workers.get(worker.key) is worker:
            del self.workers[worker.key]
