"""Resolve the URIs of a config (hf://, pvc://, s3://, file://, plain paths) to local paths.

pvc:// is resolved through FINETUNE_VOLUME_MOUNTS (claim -> mount path), which the operator sets on
every trainer container. s3:// objects and folders are copied into a local cache by storage.py
(credentials and endpoint from the usual AWS_* variables); hf:// repos come from huggingface_hub
(HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE, the config's revision). A Hub that cannot be reached fails the
job at once (HubUnreachable): an offline cluster does not come online by retrying.
"""

from __future__ import annotations

import json
import os
import tempfile
from urllib.parse import unquote, urlparse

from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from finetune_trainer import storage
from finetune_trainer.errors import HubUnreachable, InvalidData, StorageAccessDenied, StorageNotFound

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
    """Return a local path holding what `uri` names, downloading remote sources first.

    Raises InvalidData for a bad URI or a missing local path; for s3:// the StorageFailure classes of
    storage.py; for hf:// HubUnreachable, StorageNotFound (no such repo or revision) or StorageAccessDenied
    (a gated repo)."""
    scheme = uri_scheme(uri)
    if scheme == "hf":
        return _fetch_hf(uri, revision, what, environ)
    if scheme == "s3":
        return storage.download(uri, cache_dir or os.path.join(tempfile.gettempdir(), "finetune-s3"), what=what)
    path = resolve_local_path(uri, volume_mounts(environ))
    if not os.path.exists(path):
        raise InvalidData(f"{what} {uri}: {path} does not exist")
    return path


def _fetch_hf(uri: str, revision: str, what: str, environ) -> str:
    repo = hf_repo_id(uri)
    try:
        # Reads HF_ENDPOINT and HF_HUB_OFFLINE (the sandbox sets it) by itself.
        return snapshot_download(repo, revision=revision, token=environ.get("HF_TOKEN") or None)
    except GatedRepoError as exc:  # before RepositoryNotFoundError, its base class
        raise StorageAccessDenied(
            f"{what} {uri}: the repo is gated (GatedRepo); accept its terms on the Hub with the account of the "
            "token in HF_TOKEN (spec.secrets.hfToken)",
            uri=uri,
            code="GatedRepo",
        ) from exc
    except RepositoryNotFoundError as exc:
        raise StorageNotFound(
            f"{what} {uri}: no such repo on the Hub, or a private one HF_TOKEN may not read (RepositoryNotFound); "
            "check the name (hf://ORG/NAME) and spec.secrets.hfToken",
            uri=uri,
            code="RepositoryNotFound",
        ) from exc
    except RevisionNotFoundError as exc:
        raise StorageNotFound(
            f"{what} {uri}: the repo has no revision {revision!r} (RevisionNotFound); give a branch, tag or commit "
            "it has in model.revision",
            uri=uri,
            code="RevisionNotFound",
        ) from exc
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise HubUnreachable(hub_unreachable_message(uri, revision, what, exc), uri=uri) from exc


def hub_unreachable_message(uri: str, revision: str, what: str, exc: BaseException) -> str:
    """Why the Hub could not be asked for `uri`, and the ways to train without it."""
    causes = list(_causes(exc))
    if any(isinstance(link, OfflineModeIsEnabled) for link in causes):
        why = "HF_HUB_OFFLINE is set"
    else:
        # huggingface_hub read HF_ENDPOINT when it was imported; that is the endpoint it asked.
        endpoint = hf_constants.ENDPOINT
        cause = causes[1] if len(causes) > 1 else None
        why = f"{endpoint} did not answer ({type(cause).__name__}: {cause})" if cause else f"{endpoint} did not answer"
    return (
        f"{what} {uri} (revision {revision}): the Hugging Face Hub cannot be reached ({why}) and the model is not in "
        "this pod's cache; copy the model to a PVC or a bucket and give pvc://CLAIM/PATH or s3://BUCKET/PREFIX, "
        "or set HF_ENDPOINT (spec.env) to a Hub mirror the cluster can reach"
    )


def _causes(exc: BaseException):
    link: BaseException | None = exc
    while link is not None:
        yield link
        link = link.__cause__ or link.__context__


def output_dir_for(uri: str, environ=os.environ) -> tuple[str, str | None]:
    """(local dir to write into, remote URI to upload to at the end or None). No I/O; a malformed s3://
    URI is InvalidData here, before anything is trained."""
    if uri_scheme(uri) == "s3":
        storage.S3Location.parse(uri, "output_uri")
        staging = os.path.join(
            tempfile.gettempdir(), "finetune-output", urlparse(uri).netloc, urlparse(uri).path.strip("/")
        )
        return staging, uri
    if uri_scheme(uri) == "hf":
        raise InvalidData(f"output_uri {uri}: hf:// outputs are not supported; use pvc://, s3:// or a path")
    return resolve_local_path(uri, volume_mounts(environ)), None


def check_output(remote_uri: str) -> None:
    """Before training: the output's bucket exists and answers to these credentials (StorageFailure if not)."""
    storage.check_location(remote_uri, what="output")


def upload(local_dir: str, remote_uri: str) -> None:
    """Everything under `local_dir` to `remote_uri`, metrics.json and the model card last (the files that
    say a model is complete). Adds and replaces objects, never deletes any."""
    storage.upload_tree(local_dir, remote_uri, what="output", last=("metrics.json", "README.md"))
