"""One pod on the sandbox's kubelet: prepare its volumes, "pull" its images, run its init containers and then its
containers (with restarts and back-off), publish its status, and end it gracefully when it is deleted.

How a container starts depends on the kubelet's runtime; `PodRuntime` (runtime.py) hides the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from ..client import ApiError, SandboxClient, retry_on_conflict
from ..conditions import format_time
from .env import EnvError
from .image_runtime.plan import ContainerConfigError
from .runtime import PodRuntime
from .status import ContainerRun, build_pod_status, exit_code_of, exit_reason, termination_message
from .volumes import VolumeError, pod_dir, referenced_sources, volume_files, volume_paths, write_files

if TYPE_CHECKING:  # the kubelet owns its pod workers; only its type is needed here
    from .node import ProcessKubelet

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 30
# Pull retries: the first back-off, doubling up to the longest (the real kubelet: 10 s to 5 min).
IMAGE_PULL_BACKOFF_SECONDS = 10.0
MAX_IMAGE_PULL_BACKOFF_SECONDS = 60.0


async def delete_now(client: SandboxClient, namespace: str, name: str) -> None:
    try:
        await client.delete("v1", "pods", namespace, name, grace_period_seconds=0)
    except ApiError as error:
        if error.status != 404:
            raise


class _Stopping(Exception):
    """The pod is being terminated: leave the lifecycle."""


class PodWorker:
    """Runs one pod: prepare, init containers, containers with restarts, graceful termination."""

    def __init__(self, kubelet: ProcessKubelet, pod: dict) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.key = (meta.get("namespace", "default"), meta["name"])
        self.uid = meta.get("uid")
        spec = pod.get("spec") or {}
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.init_runs = [ContainerRun(c["name"], c.get("image", "")) for c in spec.get("initContainers") or []]
        self.runs = [ContainerRun(c["name"], c.get("image", "")) for c in spec.get("containers") or []]
        self.dir = pod_dir(kubelet.data_dir, *self.key)
        self.runtime = PodRuntime(kubelet, self.key, self.uid, self.dir)
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.killed_by_us: set[str] = set()
        self.stopping = asyncio.Event()
        self.grace = float(DEFAULT_GRACE_SECONDS)
        self.start_time = format_time(kubelet.now())
        self.sandbox_ready = False
        self._task: asyncio.Task | None = None
        self._publish_lock = asyncio.Lock()

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._main(), name=f"pod-{self.key[0]}-{self.key[1]}")

    def request_termination(self, grace: float) -> None:
        if not self.stopping.is_set():
            self.grace = grace
            self.stopping.set()

    async def kill(self) -> None:
        """Immediate SIGKILL, no status (the pod object is gone or the kubelet stops)."""
        self.stopping.set()
        for name in list(self.processes):
            self._signal(name, signal.SIGKILL)
        if self._task is not None:
            self._task.cancel()
            # asyncio.wait, not `await self._task`: a cancellation of the caller itself must not be swallowed.
            await asyncio.wait({self._task})

    async def _main(self) -> None:
        lifecycle = asyncio.create_task(self._lifecycle())
        stop_wait = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({lifecycle, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not self.stopping.is_set():
                # Finished on its own: the pod object stays (terminal) until someone deletes it.
                stop_wait.cancel()
                await lifecycle
                await self.stopping.wait()
                await delete_now(self.kubelet.client, *self.key)
                return
            await self._terminate(lifecycle)
        except asyncio.CancelledError:
            lifecycle.cancel()
            stop_wait.cancel()
            raise
        except Exception:  # noqa: BLE001 - a broken pod must not take the kubelet down; the log says why.
            log.exception("pod %s/%s: kubelet worker failed", *self.key)
        finally:
            self.kubelet.forget(self)
            names = self.runtime.release_working_containers()
            if names:
                # The image runtime's working containers go with the pod worker, their processes first.
                for name in list(self.processes):
                    self._signal(name, signal.SIGKILL)
                self.kubelet.remove_working_containers(names, list(self.processes.values()))

    async def _terminate(self, lifecycle: asyncio.Task) -> None:
        for name in list(self.processes):
            self._signal(name, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(lifecycle), timeout=self.grace)
        except asyncio.TimeoutError:
            for name in list(self.processes):
                self._signal(name, signal.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(lifecycle), timeout=10)
            except asyncio.TimeoutError:
                lifecycle.cancel()
        with contextlib.suppress(asyncio.CancelledError, _Stopping):
            await lifecycle
        # Containers that never ran are reported as they were; the pod's final phase counts them as not succeeded.
        await self.publish(phase=_final_phase(self.init_runs, self.runs))
        await delete_now(self.kubelet.client, *self.key)

    async def _lifecycle(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            await self.publish()
            configmaps, secrets = await self._prepare()
            self.sandbox_ready = True
            await self._pull_images()
            for index, run in enumerate(self.init_runs):
                await self._run_init(index, run, configmaps, secrets)
            await self.publish()
            await asyncio.gather(
                *(self._run_main(index, run, configmaps, secrets) for index, run in enumerate(self.runs))
            )
            await self.publish()
        except _Stopping:
            return

    async def _prepare(self) -> tuple[dict, dict]:
        """Fetch referenced ConfigMaps/Secrets and materialise volumes; waits while a source is missing."""
        while True:
            self._check_stopping()
            configmaps, secrets = await self._fetch_sources()
            try:
                paths = volume_paths(self.pod, self.kubelet.data_dir)
                for volume in (self.pod.get("spec") or {}).get("volumes") or []:
                    root = paths[volume["name"]]
                    files = volume_files(volume, configmaps, secrets)
                    if "hostPath" not in volume:
                        root.mkdir(parents=True, exist_ok=True)
                    if files:
                        write_files(root, files)
                return configmaps, secrets
            except VolumeError as error:
                # Real kubelet: the pod stays ContainerCreating (FailedMount) until the source appears.
                for run in self.init_runs + self.runs:
                    run.reason, run.message = "ContainerCreating", str(error)
                await self.publish()
                await self._sleep(1.0)

    async def _fetch_sources(self) -> tuple[dict, dict]:
        namespace = self.key[0]
        configmap_names, secret_names = referenced_sources(self.pod)
        configmaps = {name: await self._get_or_none("configmaps", namespace, name) for name in configmap_names}
        secrets = {name: await self._get_or_none("secrets", namespace, name) for name in secret_names}
        return configmaps, secrets

    async def _get_or_none(self, plural: str, namespace: str, name: str) -> dict | None:
        try:
            return await self.kubelet.client.get("v1", plural, namespace, name)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def _pull_images(self) -> None:
        attempt = 0
        while True:
            missing = await self.runtime.missing_images(self.init_runs + self.runs)
            if not missing:
                if attempt:
                    for run in self.init_runs + self.runs:
                        run.reason, run.message = "ContainerCreating", ""
                    await self.publish()
                return
            for run in missing:
                run.reason, run.message = "ErrImagePull", self.runtime.pull_error(run.image)
            await self.publish()
            await self._sleep(1.0)
            for run in missing:
                run.reason, run.message = "ImagePullBackOff", f'Back-off pulling image "{run.image}"'
            await self.publish()
            await self._sleep(min(IMAGE_PULL_BACKOFF_SECONDS * 2**attempt, MAX_IMAGE_PULL_BACKOFF_SECONDS))
            attempt += 1

    async def _run_init(self, index: int, run: ContainerRun, configmaps: dict, secrets: dict) -> None:
        spec = (self.pod.get("spec") or {})["initContainers"][index]
        attempt = 0
        while True:
            await self._run_once(spec, run, configmaps, secrets)
            if run.exit_code == 0:
                return
            if self.restart_policy == "Never":
                await self.publish()
                raise _Stopping()  # the pod has failed; _main waits for its deletion
            attempt += 1
            await self._back_off(run, attempt)

    async def _run_main(self, index: int, run: ContainerRun, configmaps: dict, secrets: dict) -> None:
        spec = (self.pod.get("spec") or {})["containers"][index]
        attempt = 0
        while True:
            await self._run_once(spec, run, configmaps, secrets)
            if self.restart_policy == "Never" or (self.restart_policy == "OnFailure" and run.exit_code == 0):
                return
            attempt += 1
            await self._back_off(run, attempt)

    async def _back_off(self, run: ContainerRun, attempt: int) -> None:
        self._check_stopping()
        await self.publish()
        delay = min(self.kubelet.restart_backoff_seconds * 2 ** (attempt - 1), self.kubelet.max_restart_backoff_seconds)
        await self._sleep(delay)
        run.last_state = run.terminated_state()
        run.restart_count += 1

    async def _run_once(self, spec: dict, run: ContainerRun, configmaps: dict, secrets: dict) -> None:
        """Start the container's process, wait for it, record how it ended."""
        self._check_stopping()
        try:
            launch = await self.runtime.launch(self.pod, spec, run, configmaps, secrets)
        except (EnvError, VolumeError, ContainerConfigError) as error:
            reason = getattr(error, "reason", "CreateContainerConfigError")
            run.state, run.reason, run.message = "waiting", reason, str(error)
            await self.publish()
            # Like the real kubelet, keep waiting: the missing reference may be created later.
            await self._sleep(2.0)
            fresh_configmaps, fresh_secrets = await self._fetch_sources()
            configmaps.update(fresh_configmaps)
            secrets.update(fresh_secrets)
            return await self._run_once(spec, run, configmaps, secrets)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.kubelet.register_log is not None:
            self.kubelet.register_log(self.key[0], self.key[1], run.name, str(launch.log_path))
        with open(launch.log_path, "ab") as log_file:
            try:
                process = await asyncio.create_subprocess_exec(
                    *launch.argv,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    env=launch.env,
                    cwd=launch.cwd,
                    start_new_session=True,
                )
            except OSError as error:
                run.state, run.reason = "terminated", "StartError"
                run.exit_code, run.message = 128, f"failed to start {launch.argv[0]!r}: {error}"
                run.started_at = run.finished_at = format_time(self.kubelet.now())
                await self.publish()
                return
        self.processes[run.name] = process
        self.killed_by_us.discard(run.name)
        run.pid, run.state, run.reason, run.message = process.pid, "running", "", ""
        run.started_at, run.finished_at, run.exit_code = format_time(self.kubelet.now()), None, None
        await self.publish()
        returncode = await process.wait()
        self.processes.pop(run.name, None)
        code = exit_code_of(returncode)
        run.state, run.exit_code = "terminated", code
        run.finished_at = format_time(self.kubelet.now())
        run.reason = exit_reason(code, run.name in self.killed_by_us)
        fallback = spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        run.message = termination_message(
            _read_head(launch.message_file, 4096),
            _read_tail(launch.log_path, 16384),
            failed=code != 0,
            fallback_to_logs=fallback,
        )
        await self.publish()

    # --- helpers ---------------------------------------------------------------------------------------------

    def _signal(self, name: str, signum: int) -> None:
        process = self.processes.get(name)
        if process is None or process.returncode is not None:
            return
        self.killed_by_us.add(name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)

    def _check_stopping(self) -> None:
        if self.stopping.is_set():
            raise _Stopping()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but leave at once (raising _Stopping) when the pod starts terminating."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return
        raise _Stopping()

    async def publish(self, phase: str | None = None) -> None:
        """Write the pod status, keeping conditions the kubelet does not own (read-modify-write on resourceVersion)."""
        client = self.kubelet.client

        async def write() -> None:
            current = await client.get("v1", "pods", *self.key)
            if current["metadata"].get("uid") != self.uid:
                return
            existing = current.get("status") or {}
            status = build_pod_status(
                existing,
                self.restart_policy,
                self.init_runs,
                self.runs,
                self.kubelet.now(),
                start_time=existing.get("startTime") or self.start_time,
                phase=phase,
                sandbox_ready=self.sandbox_ready,
            )
            if existing.get("phase") in ("Succeeded", "Failed") and status["phase"] != existing["phase"]:
                status["phase"] = existing["phase"]  # a terminal phase never changes
            if all(existing.get(key) == value for key, value in status.items()):
                return
            await client.patch(
                "v1",
                "pods",
                *self.key,
                {"metadata": {"resourceVersion": current["metadata"].get("resourceVersion")}, "status": status},
                subresource="status",
            )

        async with self._publish_lock:
            try:
                await retry_on_conflict(write, attempts=10)
            except ApiError as error:
                if error.status != 404:
                    raise


def _final_phase(init_runs: list[ContainerRun], runs: list[ContainerRun]) -> str:
    everything = init_runs + runs
    ok = all(run.state == "terminated" and run.exit_code == 0 for run in everything)
    return "Succeeded" if ok and runs else "Failed"


def _read_head(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit)
    except OSError:
        return b""


def _read_tail(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read()
    except OSError:
        return b""
