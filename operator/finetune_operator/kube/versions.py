"""Comparing resourceVersions (pure)."""

from __future__ import annotations


def newer_version(version: str | None, than: str | None) -> bool:
    """Whether resourceVersion `version` is newer than `than`.

    resourceVersions are opaque by contract; the API server's (etcd's) are increasing integers, and only
    then are they compared by size (otherwise: any different version counts as newer).
    """
    if version is None or than is None:
        return version is not None
    if version.isdigit() and than.isdigit():
        return int(version) > int(than)
    return version != than
