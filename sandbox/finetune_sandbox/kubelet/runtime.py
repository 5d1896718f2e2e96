"""What differs between the kubelet's two runtimes, for one pod: which of its images are missing, what a failed
"pull" says, and how one start of a container is launched (the process runtime's argv, env and working dir, or
a fresh working container of the image runtime). The pod worker drives the lifecycle; this starts containers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .env import resolve_env, sandbox_env
from .image_runtime.buildah import WORKING_CONTAINER_PREFIX, BuildahError, WorkingContainer
from .image_runtime.command import host_env, launch_argv
from .image_runtime.filesystem import apply_volume_ownership, image_accounts, readlink_or_none
from .image_runtime.plan import ContainerConfigError, plan_container
from .process_runtime import is_bad_image, process_launch
from .status import ContainerRun
from .volumes import Mount, container_mounts, volume_paths

if TYPE_CHECKING:  # the kubelet owns its pod workers and their runtimes; only its type is needed here
    from .node import ProcessKubelet


@dataclass(frozen=True)
class Launch:
    """One start of a container: what to exec, with which env, where; where its termination message and log go."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    message_file: Path
    log_path: Path


class PodRuntime:
    """The kubelet's runtime as one pod sees it; in the image runtime, also the pod's working containers."""

    def __init__(self, kubelet: ProcessKubelet, key: tuple[str, str], uid: str | None, pod_dir: Path) -> None:
        self.kubelet = kubelet
        self.key = key
        self.uid = uid
        self.dir = pod_dir
        # Image runtime: the working container of each container's latest start.
        self.working_containers: dict[str, WorkingContainer] = {}
        self.starts = 0

    async def missing_images(self, runs: list[ContainerRun]) -> list[ContainerRun]:
        """The runs whose image cannot be had; the image runtime records the others' image IDs."""
        if self.kubelet.runtime == "process":
            return [run for run in runs if is_bad_image(run.image)]
        buildah = self.kubelet.buildah
        present = {image: await buildah.image_config(image) for image in {run.image for run in runs}}
        for run in runs:
            if present[run.image] is not None:
                run.image_id = present[run.image].image_id
        return [run for run in runs if present[run.image] is None]

    def pull_error(self, image: str) -> str:
        if self.kubelet.runtime == "image":
            return (
                f'image "{image}" is not in the local image store (buildah images): the sandbox never pulls; '
                f"build it (e.g. make images) or fetch it with buildah pull"
            )
        return f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": not found'

    async def launch(self, pod: dict, spec: dict, run: ContainerRun, configmaps: dict, secrets: dict) -> Launch:
        """One start of container `spec` of `pod`. Raises EnvError, VolumeError or ContainerConfigError when it
        cannot start as specified (the container then waits with that reason)."""
        mounts, env, message_file, log_path = self._container_inputs(pod, spec, configmaps, secrets)
        if self.kubelet.runtime == "image":
            argv, process_env = await self._image_launch(pod, spec, run, mounts, env, message_file)
            return Launch(argv, process_env, str(self.dir), message_file, log_path)
        argv, process_env, cwd = process_launch(
            pod,
            spec,
            mounts,
            env,
            message_file,
            pod_dir=self.dir,
            python=self.kubelet.python,
            extra_env=self.kubelet.extra_env,
        )
        return Launch(argv, process_env, cwd, message_file, log_path)

    def release_working_containers(self) -> list[str]:
        """The names of the pod's working containers, which are no longer its own (the kubelet removes them)."""
        names = [container.name for container in self.working_containers.values()]
        self.working_containers = {}
        return names

    def _container_inputs(
        self, pod: dict, spec: dict, configmaps: dict, secrets: dict
    ) -> tuple[list[Mount], dict, Path, Path]:
        """What both runtimes start a container from: its mounts (folders made), its resolved env with cluster
        DNS names pointed at this machine, its (emptied) termination-message file and its log file."""
        name = spec["name"]
        mounts = container_mounts(spec, volume_paths(pod, self.kubelet.data_dir))
        for mount in mounts:
            # A subPath that names a projected file already exists; anything missing becomes a folder.
            if not mount.local_path.exists():
                mount.local_path.mkdir(parents=True, exist_ok=True)
        env = resolve_env(spec, pod, configmaps, secrets)
        env = sandbox_env(env)
        message_file = self.dir / "termination" / name
        message_file.parent.mkdir(parents=True, exist_ok=True)
        message_file.write_bytes(b"")
        # As the real kubelet does: any container user may write its termination message.
        message_file.chmod(0o666)
        return mounts, env, message_file, self.dir / f"{name}.log"

    async def _image_launch(
        self, pod: dict, spec: dict, run: ContainerRun, mounts: list[Mount], env: dict, message_file: Path
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
            raise ContainerConfigError("ErrImagePull", f"{self.pull_error(run.image)} ({error})") from error
        self.working_containers[name] = container
        run.image_id = container.config.image_id
        accounts, groups = await asyncio.to_thread(image_accounts, container.rootfs)
        plan = plan_container(
            pod,
            spec,
            container.config,
            env,
            mounts,
            message_file,
            extra_env=self.kubelet.extra_env,
            accounts=accounts,
            groups=groups,
        )
        await asyncio.to_thread(apply_volume_ownership, plan, mounts, pod)
        argv = await asyncio.to_thread(launch_argv, plan, container.rootfs, readlink_or_none)
        return argv, host_env()
