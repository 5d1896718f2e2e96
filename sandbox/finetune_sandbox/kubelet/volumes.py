"""Where a pod's volumes live on the laptop, and how container paths are rewritten to them.

Layout under the kubelet's data_dir:
  pods/NS/POD/volumes/NAME     emptyDir, configMap, secret and projected volumes of one pod
  pvcs/NS/CLAIM                persistentVolumeClaim volumes, shared by every pod that mounts the claim
  pods/NS/POD/termination/C    the terminationMessagePath file of container C
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class VolumeError(Exception):
    """A volume or mount the sandbox cannot provide; the message names it and how to fix it.

    `cause` is the error as the real kubelet's volume plugin words it (what follows "MountVolume.SetUp failed
    for volume "NAME" : " in a FailedMount event), e.g. `configmap "cfg" not found`.
    """

    def __init__(self, message: str, *, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause or message


@dataclass(frozen=True)
class Mount:
    mount_path: str
    local_path: Path
    read_only: bool = False
    volume: str = ""


def pod_dir(data_dir: Path, namespace: str, pod: str) -> Path:
    return Path(data_dir) / "pods" / namespace / pod


def pvc_dir(data_dir: Path, namespace: str, claim: str) -> Path:
    return Path(data_dir) / "pvcs" / namespace / claim


def volume_paths(pod: dict, data_dir: Path) -> dict[str, Path]:
    """Local root folder of each of the pod's volumes, by volume name."""
    return {
        volume["name"]: volume_path(pod, volume, data_dir) for volume in (pod.get("spec") or {}).get("volumes") or []
    }


def volume_path(pod: dict, volume: dict, data_dir: Path) -> Path:
    """Local root folder of one of the pod's volumes."""
    meta = pod["metadata"]
    namespace, name = meta.get("namespace", "default"), meta["name"]
    if "persistentVolumeClaim" in volume:
        claim = (volume["persistentVolumeClaim"] or {}).get("claimName")
        if not claim:
            raise VolumeError(f"volume {volume['name']!r}: persistentVolumeClaim needs claimName")
        return pvc_dir(data_dir, namespace, claim)
    if "hostPath" in volume:
        return Path(volume["hostPath"]["path"])
    # emptyDir, configMap, secret, projected, downwardAPI: a private folder of this pod.
    return pod_dir(data_dir, namespace, name) / "volumes" / volume["name"]


def container_mounts(container: dict, volumes: dict[str, Path]) -> list[Mount]:
    mounts = []
    for mount in container.get("volumeMounts") or []:
        volume = mount.get("name")
        if volume not in volumes:
            raise VolumeError(
                f"container {container.get('name')!r}: volumeMount {mount.get('mountPath')!r} names volume "
                f"{volume!r}, which is not in spec.volumes (add it there, e.g. {{name: {volume}, emptyDir: {{}}}})"
            )
        local = volumes[volume]
        if mount.get("subPath"):
            local = local / mount["subPath"]
        mounts.append(Mount(mount["mountPath"].rstrip("/") or "/", local, bool(mount.get("readOnly")), volume))
    return mounts


def decode_data(obj: dict, *, secret: bool) -> dict[str, bytes]:
    """Key -> bytes of a ConfigMap (data, binaryData) or Secret (base64 data, plain stringData)."""
    files: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        files[key] = base64.b64decode(value) if secret else str(value).encode()
    for key, value in (obj.get("binaryData") or {}).items():
        files[key] = base64.b64decode(value)
    if secret:
        for key, value in (obj.get("stringData") or {}).items():
            files[key] = str(value).encode()
    return files


def project_files(
    data: dict[str, bytes], items: list[dict] | None, source: str, *, kind: str = "configmap"
) -> dict[str, bytes]:
    """Relative path -> content, honouring `items` (key -> path); all keys as files without it."""
    if not items:
        return dict(data)
    files = {}
    for item in items:
        key = item.get("key")
        # The volume plugins' words (pkg/volume/configmap, pkg/volume/secret).
        missing_key_cause = (
            f"configmap references non-existent config key: {key}"
            if kind == "configmap"
            else f"references non-existent secret key: {key}"
        )
        if key not in data:
            raise VolumeError(
                f"{source}: items names key {key!r}, which is not in its data (keys: {sorted(data)})",
                cause=missing_key_cause,
            )
        path = item.get("path") or key
        if path.startswith("/") or ".." in Path(path).parts:
            raise VolumeError(f"{source}: items path {path!r} must be relative and stay inside the volume")
        files[path] = data[key]
    return files


def write_files(root: Path, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def volume_files(
    volume: dict, configmaps: dict[str, dict | None], secrets: dict[str, dict | None]
) -> dict[str, bytes] | None:
    """Files of a configMap/secret/projected volume (None for folder-only volumes); raises on missing sources."""
    name = volume["name"]
    if "configMap" in volume or "secret" in volume:
        return _source_files(name, volume, configmaps, secrets)
    if "projected" in volume:
        files: dict[str, bytes] = {}
        for source in (volume["projected"] or {}).get("sources") or []:
            files.update(_source_files(name, source, configmaps, secrets) or {})
        return files
    return None


def _source_files(volume_name: str, source: dict, configmaps: dict, secrets: dict) -> dict[str, bytes] | None:
    if "configMap" in source:
        ref = source["configMap"] or {}
        obj, kind, secret = configmaps.get(ref.get("name", "")), "configmap", False
    elif "secret" in source:
        ref = source["secret"] or {}
        ref = {**ref, "name": ref.get("secretName") or ref.get("name", "")}
        obj, kind, secret = secrets.get(ref["name"]), "secret", True
    else:
        return None
    if obj is None:
        if ref.get("optional"):
            return {}
        raise VolumeError(
            f'volume {volume_name!r}: {kind} "{ref.get("name")}" not found '
            f"(create it in the pod's namespace, or mark the volume source optional: true)",
            cause=f'{kind} "{ref.get("name")}" not found',
        )
    where = f"volume {volume_name!r} ({kind} {ref.get('name')!r})"
    return project_files(decode_data(obj, secret=secret), ref.get("items"), where, kind=kind)


def volume_sources(volume: dict) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets one volume (configMap, secret or projected) is made from."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    for source in [volume] + list(((volume.get("projected") or {}).get("sources")) or []):
        if "configMap" in source:
            configmaps.add((source["configMap"] or {}).get("name", ""))
        if "secret" in source:
            ref = source["secret"] or {}
            secrets.add(ref.get("secretName") or ref.get("name", ""))
    configmaps.discard("")
    secrets.discard("")
    return configmaps, secrets


def referenced_sources(pod: dict) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the pod's volumes and env refer to (to fetch them before start)."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    spec = pod.get("spec") or {}
    for volume in spec.get("volumes") or []:
        volume_configmaps, volume_secrets = volume_sources(volume)
        configmaps |= volume_configmaps
        secrets |= volume_secrets
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                configmaps.add(source["configMapRef"].get("name", ""))
            if "secretRef" in source:
                secrets.add(source["secretRef"].get("name", ""))
        for variable in container.get("env") or []:
            value_from = variable.get("valueFrom") or {}
            if "configMapKeyRef" in value_from:
                configmaps.add(value_from["configMapKeyRef"].get("name", ""))
            if "secretKeyRef" in value_from:
                secrets.add(value_from["secretKeyRef"].get("name", ""))
    configmaps.discard("")
    secrets.discard("")
    return configmaps, secrets


def path_rewriter(mapping: dict[str, str]) -> Callable[[str], str]:
    """Replace container paths by local ones in one pass, longest first, only at path boundaries.

    One pass matters: a local folder may itself lie under a mounted path (data_dir under /tmp while /tmp is
    a mount), and a second replacement would corrupt it. Boundaries keep "/tmp" from matching "/var/tmp"
    or "/tmpfiles".
    """
    if not mapping:
        return lambda text: text
    ordered = sorted(mapping, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w.\-/])(" + "|".join(re.escape(path) for path in ordered) + r")(?![\w.\-])")
    return lambda text: pattern.sub(lambda match: mapping[match.group(1)], text)
