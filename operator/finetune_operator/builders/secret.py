"""The per-job Secret holding the trainer's progress token (docs/progress.md)."""

from __future__ import annotations

import base64
from typing import Any

from ..names import PROGRESS_TOKEN_KEY, progress_secret_name
from .meta import child_metadata


def build_progress_secret(name: str, namespace: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": child_metadata(progress_secret_name(name), namespace, name),
        "data": {PROGRESS_TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }
