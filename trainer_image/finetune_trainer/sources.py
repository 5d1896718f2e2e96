"""Resolve the URIs of a config (hf://, pvc://, s3://, file://, plain paths) to local paths.

pvc:// is resolved through FINETUNE_VOLUME_MOUNTS (claim -> mount path), which the operator sets on
every trainer container. s3:// objects are copied into a local cache with fsspec (credentials from
the usual AWS_* variables); hf:// repos come from huggingface_hub (HF_TOKEN, the config's revision).
"""

from __future__ import annotations

import json
import os
import tempfile
from urllib.parse import unquote, urlparse

import fsspec
from huggingface_hub import snapshot_download

from finetune_trainer.errors import InvalidData

MOUNTS_ENV = "FINETUNE_VOLUME_MOUNTS"


def volume_mounts(environ=os.environ) -> dict[str, str]:
    raw = environ.get(MOUNTS_ENV, "")
    if not raw:
        return {}
    try:
        mounts = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidData(f'{MOUNTS_ENV} is not JSON ({exc}); expected e.g. {{"models": "/mnt/pvc/models"}}') from exc
    if not isinstance(mounts, dict):
        raise InvalidData(f"{MOUNTS_ENV} must be a JSON object of claim -> mount path; got {raw!r}")
    return {str(k): str(v) for k, v in mounts.items()}


def uri_scheme(uri: str) -> str:
    """'hf', 'pvc', 's3', 'file' (plain paths too)."""
    scheme = urlparse(uri).scheme
    return scheme if scheme in ("hf", "pvc", "s3") else "file"


def resolve_local_path(uri: str, mounts: dict[str, str]) -> str:
    """Pure part: a file://, plain or pvc:// URI to a local path (no I/O)."""
    parsed = urlparse(uri)
    if parsed.scheme == "pvc":
        claim = parsed.netloc
        if claim not in mounts:
            known = ", ".join(sorted(mounts)) or "none"
            raise InvalidData(
                f"{uri}: claim {claim!r} is not mounted (mounted claims: {known}); {MOUNTS_ENV} maps claims to mount paths"
            )
        return os.path.join(mounts[claim], unquote(parsed.path).lstrip("/"))
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme in ("hf", "s3"):
        raise ValueError(f"{uri} is remote; use fetch()")
    return uri


def hf_repo_id(uri: str) -> str:
    parsed = urlparse(uri)
    repo = (parsed.netloc + parsed.path).strip("/")
    if repo.count("/") > 1 or not repo:
        raise InvalidData(f"{uri}: expected hf://ORG/NAME or hf://NAME")
    return repo


def fetch(
    uri: str, *, revision: str = "main", what: str = "data", environ=os.environ, cache_dir: str | None = None
) -> str:
    """Return a local path holding what `uri` names, downloading remote sources first."""
    scheme = uri_scheme(uri)
    if scheme == "hf":
        # Reads HF_TOKEN and honours HF_HUB_OFFLINE (the sandbox sets it) by itself.
        return snapshot_download(hf_repo_id(uri), revision=revision, token=environ.get("HF_TOKEN") or None)
    if scheme == "s3":
        return _fetch_s3(uri, cache_dir or os.path.join(tempfile.gettempdir(), "finetune-s3"))
    path = resolve_local_path(uri, volume_mounts(environ))
    if not os.path.exists(path):
        raise InvalidData(f"{what} {uri}: {path} does not exist")
    return path


def _fetch_s3(uri: str, cache_dir: str) -> str:
    fs, remote = fsspec.core.url_to_fs(uri)
    local = os.path.join(cache_dir, remote.strip("/"))
    if fs.isdir(remote):
        fs.get(remote.rstrip("/") + "/", local.rstrip("/") + "/", recursive=True)
    elif fs.exists(remote):
        os.makedirs(os.path.dirname(local), exist_ok=True)
        fs.get(remote, local)
    else:
        raise InvalidData(f"{uri} does not exist")
    return local


def output_dir_for(uri: str, environ=os.environ) -> tuple[str, str | None]:
    """(local dir to write into, remote URI to upload to at the end or None)."""
    if uri_scheme(uri) == "s3":
        staging = os.path.join(
            tempfile.gettempdir(), "finetune-output", urlparse(uri).netloc, urlparse(uri).path.strip("/")
        )
        return staging, uri
    if uri_scheme(uri) == "hf":
        raise InvalidData(f"output_uri {uri}: hf:// outputs are not supported; use pvc://, s3:// or a path")
    return resolve_local_path(uri, volume_mounts(environ)), None


def upload(local_dir: str, remote_uri: str) -> None:
    fs, remote = fsspec.core.url_to_fs(remote_uri)
    fs.put(local_dir.rstrip("/") + "/", remote.rstrip("/") + "/", recursive=True)
