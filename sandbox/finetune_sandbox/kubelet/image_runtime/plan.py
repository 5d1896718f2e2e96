"""The image runtime's pure planner: what to exec for a container from its image, as whom, with which env,
working dir, root and mounts, by Kubernetes' (and containerd's) rules. Nothing here touches buildah or files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..env import expand_references
from ..status import DEFAULT_TERMINATION_MESSAGE_PATH
from ..volumes import Mount

# containerd's PATH for images that set none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Device nodes a runtime puts in a container's /dev (bound from the host's).
DEVICE_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# Host files bound read-only into the container when the image has them (name resolution on this machine).
HOST_FILES = ("/etc/resolv.conf", "/etc/hosts")


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
