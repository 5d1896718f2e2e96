"""The newest FineTuneJob the operator knows of each job, kept as its JSON text, not as a tree of dicts.

Reconciles that a child's event, a retry or the periodic sweep start begin from this copy instead of a GET.
At 10,000 jobs it was the largest thing the operator held (docs/scaling.md): a FineTuneJob with a status
is about 3 KB of JSON and 16 KB as Python dicts and strings. Kept as text, each read decodes a fresh copy
(tens of microseconds, once per reconcile), which the caller owns and may change: no reconcile can alter
another's view of the job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .versions import newer_version

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Entry:
    uid: str | None
    resource_version: str | None
    text: bytes


def _encode(finetunejob: dict[str, Any]) -> bytes:
    return json.dumps(finetunejob, separators=(",", ":"), ensure_ascii=False).encode()


class FineTuneJobCache:
    """(namespace, name) -> the newest FineTuneJob known: the API server's answer to the operator's own
    writes, and what the watch delivered."""

    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}

    def get(self, key: Key) -> dict[str, Any] | None:
        """A fresh copy of the newest version known, or None."""
        entry = self._entries.get(key)
        return None if entry is None else json.loads(entry.text)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, finetunejob: dict[str, Any]) -> dict[str, Any]:
        """Keep `finetunejob` unless a newer version of the same object is known already; return the newest
        known (`finetunejob` itself when it is kept, the caller's to use)."""
        meta = finetunejob["metadata"]
        key = (meta["namespace"], meta["name"])
        uid, version = meta.get("uid"), meta.get("resourceVersion")
        known = self._entries.get(key)
        if known is not None and known.uid == uid and not newer_version(version, known.resource_version):
            return json.loads(known.text)
        self._entries[key] = _Entry(uid, version, _encode(finetunejob))
        return finetunejob

    def forget(self, key: Key) -> None:
        self._entries.pop(key, None)
