"""The trainer pod's volumes and mounts: its config, the claims its URIs name, and scratch space."""

from __future__ import annotations

import hashlib
from typing import Any

from ..config import OperatorConfig
from ..names import (
    CACHE_MOUNT_DIR,
    CONFIG_MOUNT_DIR,
    PROGRESS_TOKEN_DIR,
    PVC_MOUNT_ROOT,
    config_map_name,
    progress_secret_name,
)
from ..spec import FineTuneJobSpec
from .claims import pvc_claims

CONFIG_VOLUME = "config"
PROGRESS_TOKEN_VOLUME = "progress-token"
CACHE_VOLUME = "cache"
TMP_VOLUME = "tmp"
SHM_VOLUME = "shm"
TMP_MOUNT_DIR = "/tmp"
SHM_MOUNT_DIR = "/dev/shm"
MAX_VOLUME_NAME = 63


def pvc_volume_name(claim: str) -> str:
    """`pvc-CLAIM`, shortened with a digest when a long claim name would exceed a DNS label."""
    name = f"pvc-{claim}"
    if len(name) <= MAX_VOLUME_NAME:
        return name
    digest = hashlib.sha256(claim.encode()).hexdigest()[:8]
    return f"pvc-{claim[: MAX_VOLUME_NAME - len('pvc--') - len(digest)]}-{digest}"


def claim_mount_path(claim: str) -> str:
    return f"{PVC_MOUNT_ROOT}/{claim}"


def claim_mount_table(spec: FineTuneJobSpec) -> dict[str, str]:
    """Claim name -> mount path: the FINETUNE_VOLUME_MOUNTS table the trainer resolves pvc:// with."""
    return {claim: claim_mount_path(claim) for claim in pvc_claims(spec)}


def build_claim_volumes(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    """One volume per claim the spec's pvc:// URIs name; read-only unless it holds the output."""
    volumes = []
    for claim, writable in pvc_claims(spec).items():
        source: dict[str, Any] = {"claimName": claim}
        if not writable:
            source["readOnly"] = True
        volumes.append({"name": pvc_volume_name(claim), "persistentVolumeClaim": source})
    return volumes


def build_claim_mounts(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    """The mounts of build_claim_volumes, at the paths of claim_mount_table."""
    return [
        {"name": pvc_volume_name(claim), "mountPath": claim_mount_path(claim), "readOnly": not writable}
        for claim, writable in pvc_claims(spec).items()
    ]


def build_volumes(spec: FineTuneJobSpec, name: str, config: OperatorConfig) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(name)}},
        # The job's own progress token and the CA bundle of the progress endpoint (ca.crt), readable only by the
        # trainer's user (fsGroup). A whole-Secret mount, no subPath: the kubelet refreshes it when the CA rotates.
        {"name": PROGRESS_TOKEN_VOLUME, "secret": {"secretName": progress_secret_name(name), "defaultMode": 0o440}},
    ]
    volumes += build_claim_volumes(spec)
    volumes += [
        {"name": CACHE_VOLUME, "emptyDir": {}},
        {"name": TMP_VOLUME, "emptyDir": {}},
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": config.shm_size}},
    ]
    return volumes


def build_volume_mounts(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT_DIR, "readOnly": True},
        {"name": PROGRESS_TOKEN_VOLUME, "mountPath": PROGRESS_TOKEN_DIR, "readOnly": True},
    ]
    mounts += build_claim_mounts(spec)
    mounts += [
        {"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT_DIR},
        {"name": TMP_VOLUME, "mountPath": TMP_MOUNT_DIR},
        {"name": SHM_VOLUME, "mountPath": SHM_MOUNT_DIR},
    ]
    return mounts
