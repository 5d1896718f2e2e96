"""The host command line that runs a planned container in its working container's root filesystem (pure):

  unshare --mount --propagation private sh -c SCRIPT

SCRIPT builds the container's view in a private mount namespace (nothing leaks to the host): the rootfs bound on
itself (remounted read-only for readOnlyRootFilesystem), then the plan's mounts in order, each target resolved
inside the container's root (an image's absolute symlink never leads to the host); then

  exec chroot --userspec=UID:GID --groups=GIDS ROOT /usr/bin/env -i -C WORKDIR K=V ... COMMAND ARGS...
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from .plan import ContainerConfigError, ContainerPlan

# The links a runtime makes in the tmpfs it mounts on /dev.
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "core": "/proc/kcore",
}
# The environment of the host-side helpers (unshare, sh, mount, chroot) before `env -i` replaces it.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_SYMLINKS = 40


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
