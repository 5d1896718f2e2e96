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
from .events import WARNING, container_field_path
from .image_runtime.plan import ContainerConfigError
from .mount_backoff import CLOCK_SLACK, MountBackoffs, sync_backoff
from .runtime import Launch, PodRuntime
from .status import ContainerRun, build_pod_status, exit_code_of, exit_reason, termination_message
from .volumes import (
    VolumeError,
    pod_dir,
    referenced_sources,
    volume_files,
    volume_path,
    volume_sources,
    write_files,
)

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
        """Mount the pod's volumes, then fetch what its containers' env refers to."""
        configmaps, secrets = await self._mount_volumes()
        fresh_configmaps, fresh_secrets = await self._fetch_sources(known=(configmaps, secrets))
        return {**configmaps, **fresh_configmaps}, {**secrets, **fresh_secrets}

    async def _mount_volumes(self) -> tuple[dict, dict]:
        """Set up every volume as the real kubelet's volume manager does (mount_backoff.py has the upstream facts).

        A volume that fails (its ConfigMap or Secret missing, a key it names absent) gets a FailedMount Warning
        event, "MountVolume.SetUp failed for volume "NAME" : configmap "CM" not found", and is retried when its
        own back-off expires: 0.5 s, doubling, at most 2 min 2 s. The pod stays Pending, its containers waiting
        in ContainerCreating, until all are set up. Every 2 min 3 s without that, the pod's sync gives up
        ("Unable to attach or mount volumes: ...") and waits the sync back-off before it looks again.

        Returns the ConfigMaps and Secrets the volumes were made from (None for an optional one that is absent).
        """
        kubelet = self.kubelet
        loop = asyncio.get_running_loop()
        pending = {volume["name"]: volume for volume in (self.pod.get("spec") or {}).get("volumes") or []}
        configmaps: dict[str, dict | None] = {}
        secrets: dict[str, dict | None] = {}
        backoffs = MountBackoffs(kubelet.mount_backoff_seconds, kubelet.max_mount_backoff_seconds)
        deadline = loop.time() + kubelet.mount_timeout_seconds
        paused_until: float | None = None  # the pod worker's sync back-off after a timed-out wait
        while True:
            self._check_stopping()
            for name, volume in list(pending.items()):
                if not backoffs.safe_to_retry(name, loop.time()):
                    continue
                try:
                    await self._set_up(volume, configmaps, secrets)
                except VolumeError as error:
                    backoffs.failed(name, error.cause, loop.time())
                    message = f'MountVolume.SetUp failed for volume "{name}" : {error.cause}'
                    await kubelet.events.pod_event(self.pod, WARNING, "FailedMount", message)
                else:
                    backoffs.succeeded(name)
                    del pending[name]
            now = loop.time()
            if paused_until is not None and now + CLOCK_SLACK >= paused_until:
                paused_until, deadline = None, now + kubelet.mount_timeout_seconds
            if paused_until is None:
                if not pending:
                    return configmaps, secrets
                if now + CLOCK_SLACK >= deadline:
                    message = (
                        f"Unable to attach or mount volumes: unmounted volumes=[{' '.join(sorted(pending))}], "
                        f"unattached volumes=[], failed to process volumes=[]: context deadline exceeded"
                    )
                    await kubelet.events.pod_event(self.pod, WARNING, "FailedMount", message)
                    paused_until = loop.time() + sync_backoff(kubelet.rng, kubelet.sync_backoff_seconds)
            wake = [paused_until if paused_until is not None else deadline]
            if pending:
                wake.append(backoffs.next_retry_at(list(pending)) or now)
            await self._sleep(max(0.0, min(wake) - loop.time()))

    async def _set_up(self, volume: dict, configmaps: dict, secrets: dict) -> None:
        """One SetUp of one volume: read its sources from the API server, write its files. Raises VolumeError."""
        namespace = self.key[0]
        configmap_names, secret_names = volume_sources(volume)
        for name in sorted(configmap_names):
            configmaps[name] = await self._get_or_none("configmaps", namespace, name)
        for name in sorted(secret_names):
            secrets[name] = await self._get_or_none("secrets", namespace, name)
        root = volume_path(self.pod, volume, self.kubelet.data_dir)
        files = volume_files(volume, configmaps, secrets)
        if "hostPath" not in volume:
            root.mkdir(parents=True, exist_ok=True)
        if files:
            write_files(root, files)

    async def _fetch_sources(self, known: tuple[dict, dict] = ({}, {})) -> tuple[dict, dict]:
        """The ConfigMaps and Secrets the pod refers to, from the API server; those in `known` are not read again."""
        namespace = self.key[0]
        configmap_names, secret_names = referenced_sources(self.pod)
        configmaps = {
            name: await self._get_or_none("configmaps", namespace, name)
            for name in configmap_names
            if name not in known[0]
        }
        secrets = {
            name: await self._get_or_none("secrets", namespace, name) for name in secret_names if name not in known[1]
        }
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

    async def _launch(self, spec: dict, run: ContainerRun, configmaps: dict, secrets: dict) -> Launch:
        """The container's launch; while it cannot be made (a Secret or ConfigMap its env needs is missing, ...),
        the container waits with CreateContainerConfigError and a Warning event "Failed" says "Error: ...", as
        the real kubelet's startContainer does; the pod's sync is retried after the sync back-off (10 s and up
        to 50 % jitter), with the references read again."""
        while True:
            self._check_stopping()
            try:
                return await self.runtime.launch(self.pod, spec, run, configmaps, secrets)
            except (EnvError, VolumeError, ContainerConfigError) as error:
                reason = getattr(error, "reason", "CreateContainerConfigError")
                run.state, run.reason, run.message = "waiting", reason, str(error)
                await self.publish()
                init = any(run is init_run for init_run in self.init_runs)
                await self.kubelet.events.pod_event(
                    self.pod, WARNING, "Failed", f"Error: {error}", field_path=container_field_path(run.name, init=init)
                )
                await self._sleep(sync_backoff(self.kubelet.rng, self.kubelet.sync_backoff_seconds))
                fresh_configmaps, fresh_secrets = await self._fetch_sources()
                configmaps.update(fresh_configmaps)
                secrets.update(fresh_secrets)

    async def _run_once(self, spec: dict, run: ContainerRun, configmaps: dict, secrets: dict) -> None:
        """Start the container's process, wait for it, record how it ended."""
        launch = await self._launch(spec, run, configmaps, secrets)
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
