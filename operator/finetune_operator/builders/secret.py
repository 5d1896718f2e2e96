"""The per-job Secret holding the trainer's progress token and the CA bundle it verifies the operator with
(docs/progress.md)."""

from __future__ import annotations

import base64
from typing import Any

from ..names import PROGRESS_TOKEN_KEY, progress_secret_name
from .meta import child_metadata

# The trust bundle (PEM) of the progress endpoint, beside the token: FINETUNE_PROGRESS_CA_FILE points at it.
PROGRESS_CA_KEY = "ca.crt"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def build_progress_secret(name: str, namespace: str, token: str, ca_bundle: str = "") -> dict[str, Any]:
    data = {PROGRESS_TOKEN_KEY: _b64(token)}
    if ca_bundle:
        data[PROGRESS_CA_KEY] = _b64(ca_bundle)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": child_metadata(progress_secret_name(name), namespace, name),
        "data": data,
    }


def progress_ca_patch(ca_bundle: str) -> dict[str, str]:
    """The data a live job's progress Secret is merge-patched with when the CA bundle changes."""
    return {PROGRESS_CA_KEY: _b64(ca_bundle)}
