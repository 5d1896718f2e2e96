"""The kubelet's image runtime: each container runs from the image its pod names, with buildah and no engine.

One container start:

  buildah from --pull-never IMAGE        a working container (its own writable layer) for this start
  buildah mount CTR                      its root filesystem, an overlay on this machine
  unshare --mount --propagation private sh -c SCRIPT

SCRIPT builds the container's view in a private mount namespace (nothing leaks to the host): the rootfs bound on
itself (remounted read-only for readOnlyRootFilesystem), /proc, a tmpfs /dev with the usual device nodes and a
/dev/shm, /sys read-only, the host's /etc/resolv.conf and /etc/hosts, the pod's volumes at their mount paths and
the kubelet's termination-message file at terminationMessagePath; then

  exec chroot --userspec=UID:GID --groups=GIDS ROOT /usr/bin/env -i -C WORKDIR K=V ... COMMAND ARGS...

sh, chroot and env all exec, so the PID the kubelet started is the container's process: SIGTERM/SIGKILL to its
process group and the exit code work as in the process runtime.

`plan_container` (what to run, as whom, with which env and mounts, by Kubernetes' rules) and `launch_argv` (the
command line above) are pure; `Buildah` and `apply_volume_ownership` are the small impure part.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .kubelet_env import expand_references
from .kubelet_volumes import Mount

# containerd's PATH for images that set none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# Device nodes a runtime puts in a container's /dev (bound from the host's).
DEVICE_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "core": "/proc/kcore",
}
# Host files bound read-only into the container when the image has them (name resolution on this machine).
HOST_FILES = ("/etc/resolv.conf", "/etc/hosts")
# The environment of the host-side helpers (unshare, sh, mount, chroot) before `env -i` replaces it.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WORKING_CONTAINER_PREFIX = "finetune-sandbox-"
MAX_SYMLINKS = 40


class ContainerConfigError(Exception):
    """The container cannot be created as specified; `reason` is the waiting reason the kubelet reports."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config that decide how a container starts."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "KEY=VALUE", in the image's order
    working_dir: str = ""
    user: str = ""
    image_id: str = ""

    @classmethod
    def from_inspect(cls, inspect: dict) -> ImageConfig:
        """From `buildah inspect --type image|container` JSON (its OCIv1.config)."""
        config = (inspect.get("OCIv1") or {}).get("config") or {}
        image_id = inspect.get("FromImageID") or ""
        return cls(
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            env=tuple(config.get("Env") or ()),
            working_dir=config.get("WorkingDir") or "",
            user=config.get("User") or "",
            image_id=f"sha256:{image_id}" if image_id and ":" not in image_id else image_id,
        )


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    home: str


def parse_passwd(text: str) -> dict[str, Account]:
    """name -> Account from an /etc/passwd."""
    accounts = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 6 and parts[2].isdigit() and parts[3].isdigit():
            accounts[parts[0]] = Account(int(parts[2]), int(parts[3]), parts[5] or "/")
    return accounts


def parse_group(text: str) -> dict[str, int]:
    """name -> gid from an /etc/group."""
    groups = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            groups[parts[0]] = int(parts[2])
    return groups


@dataclass(frozen=True)
class ContainerMount:
    """One mount of the container's view, in the order it is made (parents before what lies inside them).

    kind: bind (source is a host path), rbind (with what is mounted below it), tmpfs (source is mount options),
    dev (a tmpfs /dev with the links of DEV_LINKS). `optional`: only when the source and the image's target exist.
    """

    target: str
    source: str
    kind: str = "bind"
    read_only: bool = False
    optional: bool = False


@dataclass(frozen=True)
class ContainerPlan:
    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    groups: list[int]
    working_dir: str
    read_only_root: bool
    mounts: list[ContainerMount] = field(default_factory=list)


def _depth(path: str) -> int:
    return len([part for part in path.split("/") if part])


def _security(pod: dict, container: dict, key: str):
    """A securityContext field: the container's wins over the pod's (PodSecurityContext)."""
    value = (container.get("securityContext") or {}).get(key)
    if value is None:
        value = ((pod.get("spec") or {}).get("securityContext") or {}).get(key)
    return value


def container_argv(container: dict, image: ImageConfig, env: dict[str, str]) -> list[str]:
    """Kubernetes' rule: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD; $(VAR) expanded."""
    command = [expand_references(part, env) for part in container.get("command") or []]
    args = [expand_references(part, env) for part in container.get("args") or []]
    if command:
        argv = command + args
    else:
        argv = list(image.entrypoint) + (args if args else list(image.cmd))
    if not argv:
        raise ContainerConfigError(
            "CreateContainerError",
            f"container {container.get('name')!r}: no command specified (the image has no ENTRYPOINT or CMD and "
            f"the container sets no command or args)",
        )
    return argv


def container_user(
    pod: dict, container: dict, image: ImageConfig, accounts: dict[str, Account], groups: dict[str, int]
) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary gids): runAsUser/runAsGroup over the image's USER, as containerd resolves it."""
    by_uid = {account.uid: account for account in reversed(list(accounts.values()))}
    name = container.get("name")
    run_as_user = _security(pod, container, "runAsUser")
    run_as_group = _security(pod, container, "runAsGroup")
    if run_as_user is not None:
        uid = int(run_as_user)
        gid = by_uid[uid].gid if uid in by_uid else 0
    else:
        user, _, group = image.user.partition(":")
        if _security(pod, container, "runAsNonRoot") and user and not user.isdigit():
            raise ContainerConfigError(
                "CreateContainerConfigError",
                f"container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root "
                f"(container: {name})",
            )
        if not user:
            uid = 0
        elif user.isdigit():
            uid = int(user)
        elif user in accounts:
            uid = accounts[user].uid
        else:
            raise ContainerConfigError(
                "CreateContainerError", f"unable to find user {user}: no matching entries in passwd file"
            )
        gid = by_uid[uid].gid if uid in by_uid else 0
        if group.isdigit():
            gid = int(group)
        elif group:
            if group not in groups:
                raise ContainerConfigError(
                    "CreateContainerError", f"unable to find group {group}: no matching entries in group file"
                )
            gid = groups[group]
    if run_as_group is not None:
        gid = int(run_as_group)
    if _security(pod, container, "runAsNonRoot") and uid == 0:
        raise ContainerConfigError(
            "CreateContainerConfigError", f"container has runAsNonRoot and image will run as root (container: {name})"
        )
    pod_security = (pod.get("spec") or {}).get("securityContext") or {}
    extra = [pod_security["fsGroup"]] if pod_security.get("fsGroup") is not None else []
    extra += list(pod_security.get("supplementalGroups") or [])
    supplementary = []
    for value in [gid, *extra]:
        if int(value) not in supplementary:
            supplementary.append(int(value))
    return uid, gid, supplementary


def container_env(
    image: ImageConfig, env: dict[str, str], *, hostname: str, home: str, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """HOSTNAME, then the image's Env, then the container's (resolved) env, then the kubelet's extra_env.

    PATH defaults to containerd's when the image sets none; HOME to the user's home when nothing sets it (runc).
    """
    result = {"HOSTNAME": hostname}
    for item in image.env:
        key, _, value = item.partition("=")
        result[key] = value
    result.setdefault("PATH", DEFAULT_PATH)
    result.update(env)
    result.update(extra_env or {})
    result.setdefault("HOME", home)
    return result


def container_mounts_in_order(
    mounts: list[Mount], termination_path: str, termination_file: Path, pod: dict
) -> list[ContainerMount]:
    """The runtime's own mounts, the volumes and the termination file, sorted by depth (parents first, stable)."""
    volumes = {volume.get("name"): volume for volume in (pod.get("spec") or {}).get("volumes") or []}
    system = [
        ContainerMount("/proc", "/proc", "rbind"),
        ContainerMount("/dev", "nosuid,strictatime,mode=755,size=65536k", "dev"),
        *(ContainerMount(f"/dev/{node}", f"/dev/{node}") for node in DEVICE_NODES),
        ContainerMount("/dev/shm", "nosuid,nodev,noexec,mode=1777,size=65536k", "tmpfs"),
        ContainerMount("/sys", "/sys", read_only=True),
        ContainerMount("/sys/fs/cgroup", "/sys/fs/cgroup", read_only=True, optional=True),
        *(ContainerMount(path, path, read_only=True, optional=True) for path in HOST_FILES),
    ]
    own = []
    for mount in mounts:
        volume = volumes.get(mount.volume) or {}
        claim_read_only = bool((volume.get("persistentVolumeClaim") or {}).get("readOnly"))
        own.append(
            ContainerMount(mount.mount_path, str(mount.local_path), read_only=mount.read_only or claim_read_only)
        )
    own.append(ContainerMount(termination_path, str(termination_file)))
    return sorted(system + own, key=lambda mount: _depth(mount.target))


def plan_container(
    pod: dict,
    container: dict,
    image: ImageConfig,
    env: dict[str, str],
    mounts: list[Mount],
    termination_file: Path,
    *,
    extra_env: dict[str, str] | None = None,
    accounts: dict[str, Account] | None = None,
    groups: dict[str, int] | None = None,
) -> ContainerPlan:
    """What to exec for `container` of `pod` from `image`: argv, env, user, working dir, root and mounts.

    `env` is the container's resolved env (env/envFrom, cluster DNS names already pointed at this machine);
    `mounts` its volume mounts with their folders on this machine; `accounts`/`groups` the image's
    /etc/passwd and /etc/group (to resolve a named USER and HOME). Volume paths are not rewritten: the
    container sees its volumes where it mounts them.
    """
    accounts = accounts or {}
    uid, gid, supplementary = container_user(pod, container, image, accounts, groups or {})
    home = next((account.home for account in accounts.values() if account.uid == uid), "/")
    meta = pod.get("metadata") or {}
    hostname = (pod.get("spec") or {}).get("hostname") or meta.get("name", "")
    process_env = container_env(image, env, hostname=hostname, home=home, extra_env=extra_env)
    termination_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
    return ContainerPlan(
        argv=container_argv(container, image, env),
        env=process_env,
        uid=uid,
        gid=gid,
        groups=supplementary,
        working_dir=container.get("workingDir") or image.working_dir or "/",
        read_only_root=bool((container.get("securityContext") or {}).get("readOnlyRootFilesystem")),
        mounts=container_mounts_in_order(mounts, termination_path, termination_file, pod),
    )


# --- the command line ------------------------------------------------------------------------------------------

Readlink = Callable[[str], "str | None"]


def _no_links(_: str) -> str | None:
    return None


def resolve_in_container(
    path: str, rootfs: str, mounted: list[tuple[str, str | None]], readlink: Readlink = _no_links
) -> str:
    """`path` with its symlinks resolved as the container would, never leaving the container's root.

    An image's absolute link (/var/run -> /run) must not send a mount point to the host's /run. `mounted`: the
    (resolved target, host source or None) of the mounts made so far; a path inside one is looked up there.
    `readlink(host_path)` gives a link's target, None if it is no link.
    """
    pending = [part for part in path.split("/") if part]
    current = "/"
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            current = current.rsplit("/", 1)[0] or "/"
            continue
        candidate = current.rstrip("/") + "/" + part
        host = _host_path(candidate, rootfs, mounted)
        link = readlink(host) if host is not None else None
        if link is None:
            current = candidate
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            raise ContainerConfigError("CreateContainerError", f"too many levels of symbolic links in {path!r}")
        if link.startswith("/"):
            current = "/"
        pending = [piece for piece in link.split("/") if piece] + pending
    return current


def _host_path(path: str, rootfs: str, mounted: list[tuple[str, str | None]]) -> str | None:
    best: tuple[str, str | None] | None = None
    for target, source in mounted:
        if path == target:
            return None  # a mount point is never a link
        if path.startswith(target.rstrip("/") + "/") and (best is None or len(target) > len(best[0])):
            best = (target, source)
    if best is None:
        return rootfs.rstrip("/") + path
    if best[1] is None:
        return None
    return best[1].rstrip("/") + path[len(best[0].rstrip("/")) :]


def _inside_earlier(path: str, mounted: list[tuple[str, str | None]]) -> bool:
    return any(path.startswith(target.rstrip("/") + "/") for target, _ in mounted)


# Creates a mount point like its source: a folder for a folder, an empty file otherwise.
_MOUNT_POINT = (
    'mp() { if [ -d "$1" ]; then mkdir -p "$2"; else mkdir -p "$(dirname "$2")"; [ -e "$2" ] || : > "$2"; fi; }'
)


def launch_argv(plan: ContainerPlan, rootfs: str, readlink: Readlink = _no_links) -> list[str]:
    """The host command line that runs `plan` in `rootfs` (see the module docstring)."""
    q = shlex.quote
    root = '"$R"'
    early: list[str] = []  # mount points in the image's own filesystem, made before it may turn read-only
    late: list[str] = []
    mounted: list[tuple[str, str | None]] = []
    for mount in plan.mounts:
        target = resolve_in_container(mount.target, rootfs, mounted, readlink)
        inside = _inside_earlier(target, mounted)
        where = root + q(target)
        steps: list[str] = []
        if mount.kind in ("bind", "rbind"):
            if mount.optional:
                steps.append(f"if [ -e {q(mount.source)} ] && [ -e {where} ]; then")
            else:
                (late if inside else early).append(f"mp {q(mount.source)} {where}")
            steps.append(f"mount --{mount.kind} {q(mount.source)} {where}")
            if mount.read_only:
                steps.append(f"mount -o remount,bind,ro {where}")
            if mount.optional:
                steps.append("fi")
            mounted.append((target, mount.source))
        else:  # tmpfs, dev
            (late if inside else early).append(f"mkdir -p {where}")
            steps.append(f"mount -t tmpfs -o {q(mount.source)} tmpfs {where}")
            if mount.kind == "dev":
                steps += [
                    f"ln -s {q(link)} {root}{q(target.rstrip('/') + '/' + name)}" for name, link in DEV_LINKS.items()
                ]
            mounted.append((target, None))
        late += steps
    workdir = resolve_in_container(plan.working_dir, rootfs, mounted, readlink)
    (late if _inside_earlier(workdir, mounted) else early).append(f"mkdir -p {root}{q(workdir)}")
    script = ["set -e", f"R={q(rootfs)}", _MOUNT_POINT, f"mount --bind {root} {root}", *early]
    if plan.read_only_root:
        script.append(f"mount -o remount,bind,ro {root}")
    script += late
    groups = ",".join(str(gid) for gid in plan.groups or [plan.gid])
    env = [f"{key}={value}" for key, value in plan.env.items()]
    exec_line = ["chroot", f"--userspec={plan.uid}:{plan.gid}", f"--groups={groups}"]
    tail = ["/usr/bin/env", "-i", "-C", plan.working_dir, *env, *plan.argv]
    script.append("exec " + " ".join(exec_line) + f" {root} " + " ".join(q(part) for part in tail))
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)]


def host_env() -> dict[str, str]:
    """The environment of the host-side helpers; the container's own comes from `env -i` in the rootfs."""
    return {"PATH": HOST_PATH, "LANG": "C"}


# --- the impure part -----------------------------------------------------------------------------------------


def readlink_or_none(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def image_accounts(rootfs: str | Path) -> tuple[dict[str, Account], dict[str, int]]:
    """The image's /etc/passwd and /etc/group (links resolved inside the image)."""

    def read(path: str) -> str:
        resolved = resolve_in_container(path, str(rootfs), [], readlink_or_none)
        try:
            return (Path(rootfs) / resolved.lstrip("/")).read_text(errors="replace")
        except OSError:
            return ""

    return parse_passwd(read("/etc/passwd")), parse_group(read("/etc/group"))


def apply_volume_ownership(plan: ContainerPlan, mounts: list[Mount], pod: dict) -> None:
    """What fsGroup does for a non-root user: its writable volumes (never hostPath) become its own.

    The folders the kubelet made belong to root; each writable mount's tree goes to runAsUser and to fsGroup
    (the user's group when no fsGroup is set). A root container needs nothing.
    """
    pod_security = (pod.get("spec") or {}).get("securityContext") or {}
    fs_group = pod_security.get("fsGroup")
    if plan.uid == 0 and fs_group is None:
        return
    group = int(fs_group) if fs_group is not None else plan.gid
    host_path_volumes = {
        volume.get("name") for volume in (pod.get("spec") or {}).get("volumes") or [] if "hostPath" in volume
    }
    for mount in mounts:
        if mount.read_only or mount.volume in host_path_volumes or not mount.local_path.exists():
            continue
        _chown_tree(mount.local_path, plan.uid, group)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.lchown(top, uid, gid)
    if not top.is_dir() or top.is_symlink():
        return
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), uid, gid)


class BuildahError(Exception):
    pass


@dataclass
class WorkingContainer:
    name: str
    rootfs: str
    config: ImageConfig


class Buildah:
    """The few buildah calls the image runtime makes; images are only ever read from local storage."""

    def __init__(self, binary: str = "buildah") -> None:
        self.binary = binary

    async def _run(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise BuildahError(err.decode(errors="replace").strip() or f"buildah {args[0]} failed")
        return out.decode()

    async def image_config(self, image: str) -> ImageConfig | None:
        """The image's config, or None when it is not in local storage."""
        try:
            return ImageConfig.from_inspect(json.loads(await self._run("inspect", "--type", "image", image)))
        except BuildahError:
            return None

    async def create(self, image: str, name: str) -> WorkingContainer:
        """A working container of `image` (never pulled), mounted."""
        try:
            await self._run("from", "--pull-never", "--quiet", "--name", name, image)
            config = ImageConfig.from_inspect(json.loads(await self._run("inspect", "--type", "container", name)))
            rootfs = (await self._run("mount", name)).strip()
        except BaseException:
            # Also when cancelled half-way: no working container is left behind.
            await asyncio.shield(self.remove(name))
            raise
        return WorkingContainer(name, rootfs, config)

    async def remove(self, name: str) -> None:
        try:
            await self._run("rm", name)
        except BuildahError:
            pass
