"""The ClusterRole grants exactly what the code calls: kube.py's calls, Kopf's own calls, and list+watch
on every resource a registered handler or index watches (read from Kopf's registry, not restated)."""

from __future__ import annotations

from pathlib import Path

import finetune_operator.handlers  # noqa: F401  (registers the handlers)
import kopf
import yaml
from finetune_operator.kube.api import KOPF_CALLS, OWN_NAMESPACE_CALLS, RBAC_CALLS

RBAC_DIR = Path(__file__).resolve().parents[2] / "manifests" / "rbac"


def granted(kind: str = "ClusterRole") -> set[tuple[str, str, str]]:
    role = next(
        d for path in RBAC_DIR.glob("*.yaml") for d in yaml.safe_load_all(path.read_text()) if d["kind"] == kind
    )
    out = set()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], f"wildcard in {rule}"
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def watched_by_handlers() -> set[tuple[str, str, str]]:
    registry = kopf.get_default_registry()
    calls = set()
    for handlers in (registry._indexing, registry._watching, registry._changing, registry._spawning):
        for handler in handlers.get_all_handlers():
            selector = handler.selector
            calls |= {(selector.group, selector.any_name, "list"), (selector.group, selector.any_name, "watch")}
    return calls


def test_watched_resources_come_from_the_registry():
    assert ("batch", "jobs", "watch") in watched_by_handlers()
    assert ("", "pods", "list") in watched_by_handlers()
    assert ("finetune.dev", "finetunejobs", "watch") in watched_by_handlers()


def test_cluster_role_grants_exactly_what_the_operator_calls():
    needed = RBAC_CALLS | KOPF_CALLS | watched_by_handlers()
    assert granted() - needed == set(), "the role grants more than the code uses"
    assert needed - granted() == set(), "the code calls something the role does not grant"


def test_namespaced_role_grants_only_the_operators_own_secret_calls():
    assert granted("Role") == OWN_NAMESPACE_CALLS
