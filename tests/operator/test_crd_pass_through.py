"""The core/v1 fields a FineTuneJob passes through to its pods (issue 15): what the Job API accepts, both sides
accept as written; what it refuses, the CRD's CEL rules refuse under a strict (cel-go-like) evaluator too."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from finetune_operator.builders.pod_template import build_scheduling
from finetune_operator.spec import parse_spec
from finetune_operator.spec.core_v1 import label_key_problem
from finetune_sandbox.structural_schema import SchemaViolation, apply_structural_schema
from invalid_catalog import CASES, REJECT, Case, base_job

CRD_PATH = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "finetunejobs.yaml"
SCHEMA: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

_TERM = {"topologyKey": "topology.kubernetes.io/zone", "labelSelector": {"matchLabels": {"app": "trainer"}}}
# Every pass-through field, each in a form the Job API accepts, edge cases included.
EVERY_PASS_THROUGH_FIELD = {
    "queueName": "team-a.gpu",
    "priorityClassName": "training-high",
    "schedulerName": "volcano",
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "disktype": "", "Zone_1": "a"},
    "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "PreferNoSchedule"},
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
        {"key": "pool", "value": "gpu"},
        {"operator": "Exists"},
        {"key": "", "operator": "Exists", "effect": ""},
        {"key": f"{'a' * 253}/{'b' * 63}", "operator": "Exists"},
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["40000"]}]},
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]},
                            {"key": "spot", "operator": "DoesNotExist"},
                        ],
                        "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["node-1.example"]}],
                    },
                    {},
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                # A preference may name values no label has (the Job API allows it).
                {
                    "weight": 1,
                    "preference": {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["A 100"]}]},
                },
                {"weight": 100},
            ],
        },
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [_TERM]},
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["trainer"]}]},
                    "namespaceSelector": {},
                    "namespaces": ["team-a", "team-b"],
                    "matchLabelKeys": ["finetune.dev/job-name"],
                    "mismatchLabelKeys": ["team"],
                }
            ],
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "podAffinityTerm": _TERM}],
        },
    },
}
EVERY_ENV_SOURCE = [
    {"name": "NCCL_DEBUG", "value": "INFO"},
    {"name": "my.env-name", "value": ""},
    {"name": ".hidden", "value": "1"},
    {"name": "EMPTY", "value": "", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIPs"}}},
    {"name": "ZONE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['topology.kubernetes.io/zone']"}}},
    {"name": "RANK_NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['Example.COM/Note']"}}},
    {
        "name": "CPUS",
        "valueFrom": {"resourceFieldRef": {"containerName": "trainer", "resource": "limits.cpu", "divisor": 1}},
    },
    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}}},
    {"name": "HUGE", "valueFrom": {"resourceFieldRef": {"resource": "limits.hugepages-2Mi"}}},
    {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings.v2", "key": ".level", "optional": True}}},
    {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}}},
]


def _everything() -> dict[str, Any]:
    job = base_job()
    job["spec"]["scheduling"] = copy.deepcopy(EVERY_PASS_THROUGH_FIELD)
    job["spec"]["env"] = copy.deepcopy(EVERY_ENV_SOURCE)
    job["spec"]["resources"] = {"gpuResourceName": "gpu.intel.com/i915"}
    job["spec"]["secrets"] = {"hfToken": {"name": "hub", "key": ".token"}}
    return job


def test_every_pass_through_field_the_job_api_accepts_is_accepted_as_written():
    job = _everything()
    stored = apply_structural_schema(job, SCHEMA, strict=True)
    assert stored["spec"]["scheduling"]["affinity"] == job["spec"]["scheduling"]["affinity"], "nothing is pruned"
    assert stored["spec"]["env"] == job["spec"]["env"]
    spec = parse_spec(stored["spec"], job["metadata"]["name"])
    # The pod template gets the JSON as written, not a re-serialised model.
    scheduling = build_scheduling(spec)
    assert scheduling["affinity"] == job["spec"]["scheduling"]["affinity"]
    assert scheduling["tolerations"] == job["spec"]["scheduling"]["tolerations"]
    assert [var.value_from for var in spec.env if var.value_from] == [
        var["valueFrom"] for var in job["spec"]["env"] if "valueFrom" in var
    ]


def test_label_keys_at_the_limits():
    assert label_key_problem(f"{'a' * 253}/{'b' * 63}") is None
    assert label_key_problem("b" * 63) is None
    for bad in (f"{'a' * 254}/b", "b" * 64, "a/b/c", "/b", "a/", "-a", "a_b/c", "A.com/b", ""):
        assert label_key_problem(bad), bad


# --- The CRD's CEL rules, evaluated strictly ------------------------------------------------------------

if sys.version_info >= (3, 11):
    from crd_cel_checker import StrictCel, apply_defaults

    CHECKER: Any = StrictCel(SCHEMA)
else:  # cel-expr-python has no wheel for 3.10
    CHECKER = None

_SCHEMA_KEYWORD_MESSAGES = re.compile(
    r"^(Invalid value|Unsupported value|Required value|Too long|Too many|strict decoding|Request entity too large)"
)


def _cel_refused(case: Case) -> bool:
    """Whether the sandbox refuses the case by a CEL rule (not by a schema keyword)."""
    try:
        apply_structural_schema(case.job(), SCHEMA, strict=True)
    except SchemaViolation as violation:
        return all(not _SCHEMA_KEYWORD_MESSAGES.match(message) for _, message in violation.causes)
    return False


CEL_CASES = [case for case in CASES if case.crd == REJECT and _cel_refused(case)]


def _dotted(path: str) -> str:
    dotted = re.sub(r"\[([^\]]*)\]", r".\1", path)
    return "" if dotted == "spec" else dotted.removeprefix("spec.")


@pytest.mark.skipif(CHECKER is None, reason="cel-expr-python needs Python 3.11+")
def test_pass_through_fields_pass_every_rule_under_strict_evaluation():
    failures = CHECKER.validate(SCHEMA, apply_defaults(_everything(), SCHEMA), root=True)
    assert not failures, "\n".join(map(str, failures))


def test_the_catalogue_has_cases_refused_by_cel_rules():
    ids = {case.id for case in CEL_CASES}
    assert {"toleration-without-key-not-exists", "node-selector-key-not-a-label-key", "env-value-from-empty"} <= ids
    assert len(CEL_CASES) >= 20


@pytest.mark.skipif(CHECKER is None, reason="cel-expr-python needs Python 3.11+")
@pytest.mark.parametrize("case", CEL_CASES, ids=lambda case: case.id)
def test_a_case_a_cel_rule_refuses_is_refused_under_strict_evaluation(case: Case):
    # The sandbox evaluates rules with a lenient interpreter; the strict one (cel-go's types and semantics)
    # must refuse the same case, at the rule's node (the field itself or, with a fieldPath, its parent).
    failures = CHECKER.validate(SCHEMA, apply_defaults(case.job(), SCHEMA), root=True)
    field = case.field if case.crd_field is None else case.crd_field
    assert failures, f"{case.id}: no rule refused it under strict evaluation"
    for failure in failures:
        assert not failure.detail.startswith("evaluation error"), failure
        node = _dotted(failure.path)
        assert node in ("", field) or field.startswith(f"{node}."), (field, failure)
        if case.says:
            assert case.says in failure.detail, failure
