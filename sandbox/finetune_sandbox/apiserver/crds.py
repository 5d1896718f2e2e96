"""CustomResourceDefinitions as the server checks and reports them (pure): the problems that refuse one, and
the status it gets (NamesAccepted, Established, acceptedNames, storedVersions)."""

from __future__ import annotations

from typing import Any

STORAGE_VERSION_PROBLEM = "Invalid value: must have exactly one version marked as storage version"


def crd_problems(crd: dict[str, Any]) -> list[tuple[str, str]]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes = []
    if not spec.get("group"):
        causes.append(("spec.group", "Required value"))
    if not names.get("plural"):
        causes.append(("spec.names.plural", "Required value"))
    if not names.get("kind"):
        causes.append(("spec.names.kind", "Required value"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", 'Unsupported value: supported values: "Cluster", "Namespaced"'))
    versions = spec.get("versions") or []
    if not versions or sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(("spec.versions", STORAGE_VERSION_PROBLEM))
    expected = f"{names.get('plural')}.{spec.get('group')}"
    name = (crd.get("metadata") or {}).get("name")
    if name != expected:
        causes.append(("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
    return causes


def storage_version(crd: dict[str, Any]) -> str | None:
    return next((v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("storage")), None)


def crd_with_status(crd: dict[str, Any], stamp: str) -> dict[str, Any]:
    """`crd` with the status the real server gives an accepted CRD; `stamp` dates new conditions."""
    spec = crd.get("spec") or {}
    storage = storage_version(crd)
    status = dict(crd.get("status") or {})
    old_conditions = {c.get("type"): c for c in status.get("conditions") or []}
    conditions = []
    for type_, reason, message in (
        ("NamesAccepted", "NoConflicts", "no conflicts found"),
        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ):
        previous = old_conditions.get(type_)
        conditions.append(
            {
                "type": type_,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": previous.get("lastTransitionTime", stamp) if previous else stamp,
            }
        )
    stored = list(status.get("storedVersions") or [])
    if storage and storage not in stored:
        stored.append(storage)
    status.update(conditions=conditions, acceptedNames=spec.get("names") or {}, storedVersions=stored)
    return {**crd, "status": status}
