"""The operator's one source of time, so tests can move it instead of sleeping."""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)
