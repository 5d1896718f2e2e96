"""Builders reference Secrets, ConfigMaps and PVCs by name only, so the kubelet resolves them in the
job's own namespace: a FineTuneJob can never point its pods at another namespace's objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from finetune_operator.builders import build_config_map, build_job, config_hash
from finetune_operator.config import OperatorConfig
from finetune_operator.spec import InvalidSpec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
# Every place a pod spec can name another object.
REFERENCE_KEYS = {
    "secretKeyRef",
    "configMapKeyRef",
    "secretRef",
    "configMapRef",
    "secret",
    "configMap",
    "persistentVolumeClaim",
    "imagePullSecrets",
}
WITH_EVERY_REFERENCE = {
    "task": "text-classification",
    "model": {"source": "pvc://models/m"},
    "dataset": {"train": "pvc://datasets/t.csv", "validation": "pvc://other-claim/v.csv"},
    "output": {"uri": "pvc://outputs/run"},
    "secrets": {"hfToken": {"name": "hf-token", "key": "token"}, "s3Credentials": {"name": "s3"}},
    "env": [{"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}],
}


def references(node: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in REFERENCE_KEYS:
                for item in value if isinstance(value, list) else [value]:
                    yield key, item
            yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def pod_template(spec_body: dict[str, Any], name: str = "ft", namespace: str = "team-a") -> dict[str, Any]:
    spec = parse_spec(spec_body, name)
    config_map = build_config_map(spec, name, namespace)
    return build_job(spec, name, namespace, config=OperatorConfig.from_env({}), config_hash=config_hash(config_map))[
        "spec"
    ]["template"]


def spec_bodies() -> list[tuple[str, dict[str, Any]]]:
    bodies = [(p.stem, yaml.safe_load(p.read_text())["spec"]) for p in SAMPLES]
    return bodies + [("every-reference", WITH_EVERY_REFERENCE)]


@pytest.mark.parametrize("label,body", spec_bodies(), ids=[label for label, _ in spec_bodies()])
def test_references_carry_no_namespace(label, body):
    template = pod_template(body)
    found = list(references(template))
    assert found, "the template references at least its ConfigMap"
    for key, reference in found:
        assert "namespace" not in reference, f"{label}: {key} {reference} names a namespace"
        assert "/" not in str(
            reference.get("name") or reference.get("claimName") or reference.get("secretName") or ""
        ), reference


def test_a_slash_in_a_secret_name_cannot_reach_another_namespace():
    # A namespace-qualified name is refused with the field named, before any pod exists.
    body = dict(WITH_EVERY_REFERENCE, secrets={"hfToken": {"name": "other-ns/hf-token", "key": "token"}})
    with pytest.raises(InvalidSpec) as raised:
        pod_template(body)
    assert "secrets.hfToken" in str(raised.value)
