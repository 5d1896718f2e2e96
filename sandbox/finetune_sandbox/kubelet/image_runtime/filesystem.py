"""What the image runtime reads and changes on this machine's filesystem: the image's accounts (its
/etc/passwd and /etc/group, links resolved inside the image) and the ownership of a pod's writable volumes.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..volumes import Mount
from .command import resolve_in_container
from .plan import Account, ContainerPlan, parse_group, parse_passwd


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
