"""Every catalogued invalid FineTuneJob is refused by the CRD schema and by the spec package, both naming its field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from finetune_operator.spec import InvalidSpec, parse_spec
from finetune_sandbox.structural_schema import SchemaViolation, apply_structural_schema
from invalid_catalog import ACCEPT, CASES, PRUNE, REJECT, Case, base_job

CRD_PATH = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "finetunejobs.yaml"
SCHEMA: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _dotted(api_path: str) -> str:
    """spec.env[0].name -> env.0.name (the InvalidSpec form); spec -> ""; "" (the object) stays ""."""
    dotted = re.sub(r"\[([^\]]*)\]", r".\1", api_path)
    return "" if dotted == "spec" else dotted.removeprefix("spec.")


def _covers(cause_path: str, field: str) -> bool:
    return cause_path == field or cause_path.startswith(f"{field}.") or field == ""


def test_catalogue_is_large_and_ids_are_unique():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


def test_base_job_is_valid_on_both_sides():
    job = base_job()
    apply_structural_schema(job, SCHEMA, strict=True)
    parse_spec(job["spec"], job["metadata"]["name"])


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_crd_schema_refuses_the_case_at_its_field(case: Case):
    field = case.field if case.crd_field is None else case.crd_field
    job = case.job()
    if case.crd == ACCEPT:
        apply_structural_schema(job, SCHEMA, strict=True)
        return
    if case.crd == PRUNE:
        kept = apply_structural_schema(job, SCHEMA)
        assert _lookup(kept["spec"], field) is _ABSENT, "an unknown field must be pruned"
    with pytest.raises(SchemaViolation) as caught:
        apply_structural_schema(job, SCHEMA, strict=case.crd == PRUNE)
    paths = [_dotted(path) for path, _ in caught.value.causes]
    assert field in paths, caught.value.causes
    # Nothing else is blamed: one mistake, one field (its own sub-fields at most).
    assert all(_covers(path, field) for path in paths), caught.value.causes
    if case.says:
        assert any(case.says in message for _, message in caught.value.causes), caught.value.causes


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_spec_model_refuses_the_case_at_its_field(case: Case):
    field = case.field if case.pydantic_field is None else case.pydantic_field
    job = case.job()
    assert case.pydantic == REJECT  # no case today is caught by the CRD alone
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(job["spec"], job["metadata"]["name"])
    assert caught.value.field == field, caught.value
    if case.says:
        assert case.says in caught.value.message
    assert len(str(caught.value)) < 1000, "errors must not echo huge inputs back"


_ABSENT = object()


def _lookup(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node
