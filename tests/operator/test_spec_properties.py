"""Property-based: whatever a user (or a hostile client) sends, spec parsing and the CRD schema check
answer with a spec or their own error type, never a crash."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from finetune_operator.spec import FineTuneJobSpec, InvalidSpec, parse_spec
from finetune_sandbox.structural_schema import SchemaViolation, apply_structural_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
SCHEMA: dict[str, Any] = yaml.safe_load((ROOT / "manifests/crd/finetunejobs.yaml").read_text())["spec"]["versions"][0][
    "schema"
]["openAPIV3Schema"]
SAMPLES = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "manifests/samples").glob("*.yaml"))]
INT64 = (-(2**63), 2**63 - 1)

scalars = st.one_of(
    # Integers beyond int64 are kept out here: see test_crd_schema_refuses_integers_beyond_int64.
    st.none(),
    st.booleans(),
    st.integers(*INT64),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "pvc://",
            "s3://b/k",
            "hf://x",
            "../../etc/passwd",
            "$(HOME)",
            "'; DROP TABLE jobs;--",
            "\x00",
            "a" * 300,
            "1e309",
            "-0",
        ]
    ),
)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


def _set(node: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node[path[0]] = _set(node[path[0]], path[1:], value)
    return node


def _delete(node: Any, path: tuple) -> Any:
    parent = node
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return node


@st.composite
def mutated_samples(draw: st.DrawFn) -> dict[str, Any]:
    """A valid sample spec with one to three fields replaced by arbitrary values, deleted, or extended."""
    spec = copy.deepcopy(draw(st.sampled_from(SAMPLES))["spec"])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(spec)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and path:
            spec = _delete(spec, path)
        elif action == "add":
            target = spec
            for key in path:
                target = target[key]
            if isinstance(target, dict):
                target[draw(st.text(max_size=12))] = draw(json_like)
            elif isinstance(target, list):
                target.append(draw(json_like))
        else:
            spec = _set(spec, path, draw(json_like))
    return spec


def _parse(spec: Any) -> None:
    try:
        result = parse_spec(spec, "job")
    except InvalidSpec as exc:
        assert str(exc), "an InvalidSpec always says what is wrong"
        return
    assert isinstance(result, FineTuneJobSpec)


def _schema(spec: Any) -> None:
    body = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "job", "namespace": "ns"},
        "spec": spec,
    }
    try:
        stored = apply_structural_schema(body, SCHEMA)
    except SchemaViolation as exc:
        assert exc.causes
        return
    assert isinstance(stored, dict)


@FAST
@given(json_like)
def test_parse_spec_on_arbitrary_input_returns_a_spec_or_invalid_spec(spec):
    _parse(spec)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(sorted(FineTuneJobSpec.model_fields) + ["task", "model", "dataset", "output"]),
        json_like,
        max_size=8,
    )
)
def test_parse_spec_on_spec_shaped_input_returns_a_spec_or_invalid_spec(spec):
    _parse(spec)


@FAST
@given(mutated_samples())
def test_parse_spec_on_mutated_samples_returns_a_spec_or_invalid_spec(spec):
    _parse(spec)


@FAST
@given(json_like)
def test_crd_schema_on_arbitrary_input_raises_only_schema_violation(spec):
    _schema(spec)


@FAST
@given(mutated_samples())
def test_crd_schema_on_mutated_samples_raises_only_schema_violation(spec):
    _schema(spec)


def test_crd_schema_refuses_integers_beyond_int64():
    body = {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "job", "namespace": "ns"},
        "spec": {"resources": {"nodes": 2**63}},
    }
    with pytest.raises(SchemaViolation) as refused:
        apply_structural_schema(body, SCHEMA)
    assert any(field == "spec.resources.nodes" for field, _ in refused.value.causes), refused.value.causes


_SEARCH_SAMPLE = next(s for s in SAMPLES if "hyperparameterSearch" in s["spec"])
parameter_shaped = st.dictionaries(
    st.sampled_from(["values", "min", "max", "scale", "step"]),
    st.one_of(json_like, st.lists(scalars, max_size=4), st.sampled_from(["linear", "log"])),
    max_size=4,
)


@FAST
@given(
    st.dictionaries(
        st.one_of(
            st.sampled_from(
                ["learningRate", "batchSize", "method.lora.r", "precision", "dataset.train", "regularization.dropout"]
            ),
            st.text(max_size=20),
        ),
        parameter_shaped,
        max_size=4,
    )
)
def test_parse_spec_and_crd_on_arbitrary_search_parameters_answer_with_their_own_errors(parameters):
    # Search parameters are applied to the spec by spec.py's semantic check: arbitrary ones must not crash it.
    spec = copy.deepcopy(_SEARCH_SAMPLE["spec"])
    spec["hyperparameterSearch"]["parameters"] = parameters
    _parse(spec)
    _schema(spec)
