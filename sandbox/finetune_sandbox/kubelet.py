"""The sandbox's kubelet: runs the pods bound to its node as local processes, with one of two runtimes.

runtime="process" (the default): each container becomes a process of this Python environment (`python` in
`command` means sys.executable), in its own process group, with its volumes as local folders and its paths
rewritten to them. Images are recorded, never pulled; image names starting with `invalid/` or ending with
`:does-not-exist` fail to "pull" so tests can exercise ErrImagePull/ImagePullBackOff.

runtime="image": each container runs from the image its pod names, found in buildah's local storage (never
pulled), chrooted into a working container with its volumes mounted at their real paths (kubelet_image.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .client import ApiError, SandboxClient, retry_on_conflict
from .conditions import format_time, set_condition, utcnow
from .kubelet_env import EnvError, expand_references, resolve_env, rewrite_cluster_dns
from .kubelet_image import (
    WORKING_CONTAINER_PREFIX,
    Buildah,
    BuildahError,
    ContainerConfigError,
    WorkingContainer,
    apply_volume_ownership,
    host_env,
    image_accounts,
    launch_argv,
    plan_container,
    readlink_or_none,
)
from .kubelet_status import (
    ContainerRun,
    build_pod_status,
    exit_code_of,
    exit_reason,
    termination_message,
)
from .kubelet_volumes import (
    Mount,
    VolumeError,
    container_mounts,
    path_rewriter,
    pod_dir,
    referenced_sources,
    volume_files,
    volume_paths,
    write_files,
)

log = logging.getLogger(__name__)

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_GRACE_SECONDS = 30
# Host variables a process needs to run at all; everything else comes from the pod spec, as in a container.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "SYSTEMROOT")
RegisterLog = Callable[[str, str, str, str], None]
RUNTIMES = ("process", "image")
# Pull retries: the first back-off, doubling up to the longest (the real kubelet: 10 s to 5 min).
IMAGE_PULL_BACKOFF_SECONDS = 10.0
MAX_IMAGE_PULL_BACKOFF_SECONDS = 60.0


def is_bad_image(image: str) -> bool:
    return image.startswith("invalid/") or image.endswith(":does-not-exist")


def is_python(executable: str) -> bool:
    name = executable.rsplit("/", 1)[-1]
    return name == "python" or (name.startswith("python3") and all(c.isdigit() or c == "." for c in name[7:]))


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
            await _delete_now(self.client, meta.get("namespace", "default"), meta["name"])
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
                    await _delete_now(self.client, *key)
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


async def _delete_now(client: SandboxClient, namespace: str, name: str) -> None:
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
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        # Image runtime: the working container of each container's latest start.
        self.working_containers: dict[str, WorkingContainer] = {}
        self.starts = 0
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
                await _delete_now(self.kubelet.client, *self.key)
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
            if self.working_containers:
                # The image runtime's working containers go with the pod worker, their processes first.
                for name in list(self.processes):
                    self._signal(name, signal.SIGKILL)
                names = [container.name for container in self.working_containers.values()]
                self.working_containers = {}
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
        await _delete_now(self.kubelet.client, *self.key)

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

    async def _missing_images(self) -> list[ContainerRun]:
        runs = self.init_runs + self.runs
        if self.kubelet.runtime == "process":
            return [run for run in runs if is_bad_image(run.image)]
        present = {image: await self.kubelet.buildah.image_config(image) for image in {run.image for run in runs}}
        for run in runs:
            if present[run.image] is not None:
                run.image_id = present[run.image].image_id
        return [run for run in runs if present[run.image] is None]

    def _pull_error(self, image: str) -> str:
        if self.kubelet.runtime == "image":
            return (
                f'image "{image}" is not in the local image store (buildah images): the sandbox never pulls; '
                f"build it (e.g. make images) or fetch it with buildah pull"
            )
        return f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": not found'

    async def _pull_images(self) -> None:
        attempt = 0
        while True:
            missing = await self._missing_images()
            if not missing:
                if attempt:
                    for run in self.init_runs + self.runs:
                        run.reason, run.message = "ContainerCreating", ""
                    await self.publish()
                return
            for run in missing:
                run.reason, run.message = "ErrImagePull", self._pull_error(run.image)
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
            launch = await self._launch_plan(spec, run, configmaps, secrets)
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
        argv, env, cwd, message_file, log_path = launch
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.kubelet.register_log is not None:
            self.kubelet.register_log(self.key[0], self.key[1], run.name, str(log_path))
        with open(log_path, "ab") as log_file:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as error:
                run.state, run.reason = "terminated", "StartError"
                run.exit_code, run.message = 128, f"failed to start {argv[0]!r}: {error}"
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
            _read_head(message_file, 4096), _read_tail(log_path, 16384), failed=code != 0, fallback_to_logs=fallback
        )
        await self.publish()

    def _container_inputs(self, spec: dict, configmaps: dict, secrets: dict) -> tuple[list[Mount], dict, Path, Path]:
        """What both runtimes start a container from: its mounts (folders made), its resolved env with cluster
        DNS names pointed at this machine, its (emptied) termination-message file and its log file."""
        name = spec["name"]
        mounts = container_mounts(spec, volume_paths(self.pod, self.kubelet.data_dir))
        for mount in mounts:
            # A subPath that names a projected file already exists; anything missing becomes a folder.
            if not mount.local_path.exists():
                mount.local_path.mkdir(parents=True, exist_ok=True)
        env = resolve_env(spec, self.pod, configmaps, secrets)
        env = {key: rewrite_cluster_dns(value) for key, value in env.items()}
        message_file = self.dir / "termination" / name
        message_file.parent.mkdir(parents=True, exist_ok=True)
        message_file.write_bytes(b"")
        # As the real kubelet does: any container user may write its termination message.
        message_file.chmod(0o666)
        return mounts, env, message_file, self.dir / f"{name}.log"

    async def _launch_plan(self, spec: dict, run: ContainerRun, configmaps: dict, secrets: dict):
        """(argv, env, cwd, termination-message file, log file) of one start of the container."""
        mounts, env, message_file, log_path = self._container_inputs(spec, configmaps, secrets)
        if self.kubelet.runtime == "image":
            argv, process_env = await self._image_launch(spec, run, mounts, env, message_file)
            return argv, process_env, str(self.dir), message_file, log_path
        argv, process_env, cwd = self._process_launch(spec, mounts, env, message_file)
        return argv, process_env, cwd, message_file, log_path

    def _process_launch(self, spec: dict, mounts: list[Mount], env: dict, message_file: Path):
        """Process runtime: this Python environment, container paths rewritten to the volumes' folders."""
        message_path = spec.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        mapping = {mount.mount_path: str(mount.local_path) for mount in mounts}
        mapping[message_path] = str(message_file)
        rewrite = path_rewriter(mapping)
        env = {key: rewrite(value) for key, value in env.items()}
        command = [expand_references(part, env) for part in spec.get("command") or []]
        args = [expand_references(part, env) for part in spec.get("args") or []]
        if not command:
            raise VolumeError(
                f"container {spec['name']!r} has no command: the sandbox does not pull images, so it cannot know "
                f'the image\'s entrypoint; set command, e.g. ["python", "-m", "finetune_trainer"] (or run '
                f"the kubelet with the image runtime, FINETUNE_SANDBOX_RUNTIME=image)"
            )
        argv = [rewrite(part) for part in command + args]
        if is_python(argv[0]):
            argv[0] = self.kubelet.python
        base = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
        hostname = (self.pod.get("spec") or {}).get("hostname") or self.key[1]
        process_env = {**base, "HOSTNAME": hostname, "PYTHONUNBUFFERED": "1", **env, **self.kubelet.extra_env}
        working_dir = spec.get("workingDir")
        if working_dir:
            mapped = rewrite(working_dir)
            cwd = Path(mapped) if mapped != working_dir else self.dir / "rootfs" / working_dir.lstrip("/")
        else:
            cwd = self.dir / "workdir"
        cwd.mkdir(parents=True, exist_ok=True)
        return argv, process_env, str(cwd)

    async def _image_launch(
        self, spec: dict, run: ContainerRun, mounts: list[Mount], env: dict, message_file: Path
    ) -> tuple[list[str], dict[str, str]]:
        """Image runtime: a fresh working container of the pod's image, and the command that enters it."""
        name = spec["name"]
        previous = self.working_containers.pop(name, None)
        if previous is not None:
            # A restart starts from a fresh writable layer; the previous one's process has ended.
            self.kubelet.remove_working_containers([previous.name], [])
        self.starts += 1
        uid = (self.uid or "nouid")[:8]
        working_name = f"{WORKING_CONTAINER_PREFIX}{self.key[0]}-{self.key[1]}-{name}-{uid}-{self.starts}"
        try:
            container = await self.kubelet.buildah.create(run.image, working_name)
        except BuildahError as error:
            raise ContainerConfigError("ErrImagePull", f"{self._pull_error(run.image)} ({error})") from error
        self.working_containers[name] = container
        run.image_id = container.config.image_id
        accounts, groups = await asyncio.to_thread(image_accounts, container.rootfs)
        plan = plan_container(
            self.pod,
            spec,
            container.config,
            env,
            mounts,
            message_file,
            extra_env=self.kubelet.extra_env,
            accounts=accounts,
            groups=groups,
        )
        await asyncio.to_thread(apply_volume_ownership, plan, mounts, self.pod)
        argv = await asyncio.to_thread(launch_argv, plan, container.rootfs, readlink_or_none)
        return argv, host_env()

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
