"""The CRD and the spec package (finetune_operator/spec/) describe one API: walk both and hold every field, type, bound, pattern and default equal."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import celpy
import pytest
import yaml
from finetune_operator import names, spec
from finetune_operator.spec import core_v1
from finetune_operator.spec import schema as spec_schema
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

CRD_PATH = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "finetunejobs.yaml"
CONSTRAINT_KEYWORDS = {
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "pattern",
}


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def root(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# --- the walk -------------------------------------------------------------------------------------


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """Strip Optional and Annotated; return the bare type and the constraints Annotated carried."""
    metadata: list[Any] = []
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        assert len(args) == 1, f"unexpected union {annotation}"
        annotation = args[0]
    if get_origin(annotation) is Annotated:
        annotation, *extras = get_args(annotation)
        for extra in extras:
            metadata.extend(getattr(extra, "metadata", [extra]))
    return annotation, metadata


def _expected_constraints(metadata: list[Any], kind: str) -> dict[str, Any]:
    length_keys = {
        "string": ("minLength", "maxLength"),
        "array": ("minItems", "maxItems"),
        "object": ("minProperties", "maxProperties"),
    }.get(kind, ("minLength", "maxLength"))
    out: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            out["minimum"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            out.update(minimum=item.gt, exclusiveMinimum=True)
        elif isinstance(item, annotated_types.Le):
            out["maximum"] = item.le
        elif isinstance(item, annotated_types.Lt):
            out.update(maximum=item.lt, exclusiveMaximum=True)
        elif isinstance(item, annotated_types.MinLen):
            out[length_keys[0]] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            out[length_keys[1]] = item.max_length
        elif getattr(item, "pattern", None) is not None:
            out["pattern"] = item.pattern
    return out


_SCALARS = {bool, int, float, str}


def _is_scalar_union(annotation: Any) -> bool:
    """bool | int | float | str (a search's `values` items): the JSON types mix, so no OpenAPI type fits."""
    args = set(get_args(annotation)) if get_origin(annotation) in (Union, types.UnionType) else set()
    return len(args) > 1 and args <= _SCALARS


def _compare_type(annotation: Any, metadata: list[Any], node: dict[str, Any], path: str, problems: list[str]) -> None:
    if _is_scalar_union(annotation):
        # A structural schema can only leave such a node untyped, with preserve-unknown-fields.
        if "type" in node or not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: mixed scalars need an untyped node with x-kubernetes-preserve-unknown-fields")
        return
    annotation, extra = _unwrap(annotation)
    metadata = [*metadata, *extra]
    origin = get_origin(annotation)
    passed_through = [item.model for item in metadata if isinstance(item, core_v1.PassThrough)]
    if passed_through:
        # A core/v1 value kept as JSON (spec/core_v1.py): its CRD node is the model's structure.
        kind = "object"
        _compare_model(passed_through[0], node, path, problems)
        metadata = [item for item in metadata if not isinstance(item, core_v1.PassThrough)]
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        kind = "object"
        _compare_model(annotation, node, path, problems)
    elif origin is Literal:
        kind = "string"
        if sorted(node.get("enum", [])) != sorted(get_args(annotation)):
            problems.append(f"{path}: enum {node.get('enum')} != {get_args(annotation)}")
    elif origin is list:
        kind = "array"
        item_type = get_args(annotation)[0]
        _compare_type(item_type, [], node.get("items", {}), f"{path}[]", problems)
    elif origin is dict:
        kind = "object"
        value_type = get_args(annotation)[1]
        if value_type is Any:
            if not node.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{path}: free-form dict needs x-kubernetes-preserve-unknown-fields")
        else:
            _compare_type(value_type, [], node.get("additionalProperties", {}), f"{path}{{}}", problems)
    else:
        kind = {bool: "boolean", int: "integer", float: "number", str: "string"}[annotation]
    if node.get("x-kubernetes-int-or-string"):
        # cpu/memory: pydantic turns an int into its string, the CRD keeps either; a CEL rule rejects negatives.
        if kind != "string":
            problems.append(f"{path}: int-or-string in the CRD but {annotation} in spec/")
    elif node.get("type") != kind:
        problems.append(f"{path}: CRD type {node.get('type')} != spec/ {kind}")
    declared = {key: value for key, value in node.items() if key in CONSTRAINT_KEYWORDS}
    expected = _expected_constraints(metadata, kind)
    if declared != expected:
        problems.append(f"{path}: CRD constraints {declared} != spec/ {expected}")


def _compare_model(model: type[BaseModel], node: dict[str, Any], path: str, problems: list[str]) -> None:
    properties = node.get("properties", {})
    fields = {info.validation_alias or name: info for name, info in model.model_fields.items()}
    if set(fields) != set(properties):
        problems.append(
            f"{path}: only in spec/ {sorted(set(fields) - set(properties))}, "
            f"only in CRD {sorted(set(properties) - set(fields))}"
        )
    required = {alias for alias, info in fields.items() if info.is_required()}
    if required != set(node.get("required", [])):
        problems.append(f"{path}: required {sorted(node.get('required', []))} != spec/ {sorted(required)}")
    for alias, info in fields.items():
        if alias not in properties:
            continue
        field_node = properties[alias]
        _compare_type(info.annotation, list(info.metadata), field_node, f"{path}.{alias}", problems)
        _compare_default(info, field_node, f"{path}.{alias}", problems)


def _compare_default(info: Any, node: dict[str, Any], path: str, problems: list[str]) -> None:
    if info.default_factory is not None:
        made = info.default_factory()
        expected = {} if isinstance(made, BaseModel) else made
    elif info.default is PydanticUndefined or info.default is None:
        expected = PydanticUndefined
    else:
        expected = info.default
    declared = node.get("default", PydanticUndefined)
    same = (
        declared == expected
        and type(declared) is type(expected)
        or (isinstance(declared, int | float) and isinstance(expected, float) and declared == expected)
    )
    if not same:
        problems.append(f"{path}: CRD default {declared!r} != spec/ default {expected!r}")


def test_every_spec_field_matches_the_crd_in_name_type_bounds_pattern_and_default(root):
    problems: list[str] = []
    _compare_model(spec.FineTuneJobSpec, root["properties"]["spec"], "spec", problems)
    assert problems == []


def test_the_walk_notices_a_drifted_bound(root):
    # The comparison above must be able to fail: a CRD with one changed maximum is caught.
    drifted = yaml.safe_load(yaml.safe_dump(root))
    drifted["properties"]["spec"]["properties"]["resources"]["properties"]["nodes"]["maximum"] = 2048
    del drifted["properties"]["spec"]["properties"]["image"]
    problems: list[str] = []
    _compare_model(spec.FineTuneJobSpec, drifted["properties"]["spec"], "spec", problems)
    assert any("spec.resources.nodes" in p and "2048" in p for p in problems)
    assert any("only in spec/ ['image']" in p for p in problems)


# --- patterns and lists the CRD repeats from spec/schema.py ---------------------------------------


def _prop(root: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = root
    for part in dotted.split("."):
        if part == "[]":
            node = node["items"]
        elif part == "*":
            node = node["additionalProperties"]
        else:
            node = node["properties"][part]
    return node


@pytest.mark.parametrize(
    ("path", "constant"),
    [
        ("spec.model.source", "MODEL_URI_PATTERN"),
        ("spec.dataset.train", "DATA_URI_PATTERN"),
        ("spec.dataset.validation", "DATA_URI_PATTERN"),
        ("spec.dataset.retention", "DATA_URI_PATTERN"),
        ("spec.dataset.test.*", "DATA_URI_PATTERN"),
        ("spec.output.uri", "OUTPUT_URI_PATTERN"),
        ("spec.resources.cpu", "QUANTITY_PATTERN"),
        ("spec.resources.memory", "QUANTITY_PATTERN"),
        ("spec.resources.gpuResourceName", "RESOURCE_NAME_PATTERN"),
        ("spec.scheduling.queueName", "DNS_SUBDOMAIN_PATTERN"),
        ("spec.scheduling.priorityClassName", "DNS_SUBDOMAIN_PATTERN"),
        ("spec.scheduling.schedulerName", "DNS_SUBDOMAIN_PATTERN"),
        ("spec.scheduling.nodeSelector.*", "LABEL_VALUE_PATTERN"),
        ("spec.scheduling.tolerations.[].key", "OPTIONAL_QUALIFIED_NAME_PATTERN"),
        ("spec.scheduling.tolerations.[].value", "LABEL_VALUE_PATTERN"),
        ("spec.secrets.hfToken.name", "DNS_LABEL_PATTERN"),
        ("spec.secrets.hfToken.key", "CONFIG_MAP_KEY_PATTERN"),
        ("spec.secrets.s3Credentials.name", "DNS_LABEL_PATTERN"),
        ("spec.env.[].name", "ENV_NAME_PATTERN"),
        ("spec.env.[].valueFrom.fieldRef.fieldPath", "FIELD_PATH_PATTERN"),
        ("spec.env.[].valueFrom.resourceFieldRef.resource", "RESOURCE_FIELD_PATTERN"),
        ("spec.env.[].valueFrom.secretKeyRef.name", "DNS_SUBDOMAIN_PATTERN"),
        ("spec.env.[].valueFrom.secretKeyRef.key", "CONFIG_MAP_KEY_PATTERN"),
        ("spec.env.[].valueFrom.configMapKeyRef.name", "DNS_SUBDOMAIN_PATTERN"),
        ("spec.env.[].valueFrom.configMapKeyRef.key", "CONFIG_MAP_KEY_PATTERN"),
        ("spec.regularization.earlyStopping.metric", "METRIC_PATTERN"),
        ("spec.hyperparameterSearch.objective.metric", "METRIC_PATTERN"),
        ("spec.image", "IMAGE_PATTERN"),
    ],
)
def test_crd_patterns_are_the_spec_constants(root, path, constant):
    assert _prop(root, path)["pattern"] == getattr(spec_schema, constant)


def _quoted(rule: str) -> list[str]:
    return re.findall(r"'([^']*)'", rule)


def test_the_walk_compares_the_passed_through_core_v1_types(root):
    # tolerations, affinity and valueFrom stay JSON in spec/ (PassThrough) but are compared as their models.
    drifted = yaml.safe_load(yaml.safe_dump(root))
    scheduling = drifted["properties"]["spec"]["properties"]["scheduling"]["properties"]
    anti = scheduling["affinity"]["properties"]["podAntiAffinity"]["properties"]
    anti["preferredDuringSchedulingIgnoredDuringExecution"]["items"]["properties"]["weight"]["maximum"] = 1000
    del scheduling["tolerations"]["items"]["properties"]["effect"]["enum"]
    problems: list[str] = []
    _compare_model(spec.FineTuneJobSpec, drifted["properties"]["spec"], "spec", problems)
    assert any("podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[].weight" in p for p in problems)
    assert any("tolerations[].effect: enum" in p for p in problems)


def _string_nodes_with_pattern(root: dict[str, Any], *patterns: str) -> list[tuple[str, dict[str, Any]]]:
    return [(path, node) for path, node in _walk_nodes(root) if node.get("pattern") in patterns]


def test_every_label_key_field_bounds_its_prefix_with_the_spec_pattern(root):
    # A pattern cannot bound the prefix of a qualified name to 253 characters; each such field has a rule that does.
    keys = _string_nodes_with_pattern(
        root, spec_schema.QUALIFIED_NAME_PATTERN, spec_schema.OPTIONAL_QUALIFIED_NAME_PATTERN
    )
    assert len(keys) >= 10
    for path, node in keys:
        assert node["maxLength"] == spec_schema.QUALIFIED_NAME_MAX_LENGTH, path
        (rule,) = node["x-kubernetes-validations"]
        assert rule["rule"] == f"!self.matches('{spec_schema.LONG_PREFIX_PATTERN}')", path


def test_every_label_map_checks_its_keys_with_the_spec_patterns(root):
    maps = [
        (path, node)
        for path, node in _walk_nodes(root)
        if node.get("additionalProperties", {}).get("pattern") == spec_schema.LABEL_VALUE_PATTERN
    ]
    assert {path for path, _ in maps} >= {
        "spec.scheduling.nodeSelector",
        "spec.scheduling.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[].labelSelector.matchLabels",
    }
    for path, node in maps:
        (rule,) = node["x-kubernetes-validations"]
        assert _quoted(rule["rule"]) == [spec_schema.QUALIFIED_NAME_PATTERN, spec_schema.LONG_PREFIX_PATTERN], path
        assert node["maxProperties"] == core_v1.MAX_LABELS or path == "spec.scheduling.nodeSelector"


def test_gpu_resource_name_rule_uses_the_spec_prefix_limit(root):
    node = _prop(root, "spec.resources.gpuResourceName")
    assert node["maxLength"] == spec_schema.RESOURCE_NAME_MAX_LENGTH
    (rule,) = node["x-kubernetes-validations"]
    assert _quoted(rule["rule"]) == ["requests.", spec_schema.RESOURCE_LONG_PREFIX_PATTERN]


def test_divisor_rules_list_exactly_the_spec_divisors(root):
    cpu, memory = _prop(root, "spec.env.[].valueFrom.resourceFieldRef")["x-kubernetes-validations"]
    cpu_resources = ["limits.cpu", "requests.cpu"]
    assert _quoted(cpu["rule"]) == [*cpu_resources, *spec_schema.CPU_DIVISORS]
    assert _quoted(memory["rule"]) == [*cpu_resources, *spec_schema.MEMORY_DIVISORS]


def test_reserved_env_rule_lists_exactly_the_spec_reserved_names(root):
    rules = _prop(root, "spec.env.[].name")["x-kubernetes-validations"]
    assert _quoted(rules[0]["rule"]) == list(spec_schema.RESERVED_ENV)


def test_column_role_rule_lists_exactly_the_spec_roles(root):
    rules = _prop(root, "spec.dataset.columns")["x-kubernetes-validations"]
    assert _quoted(rules[0]["rule"]) == list(spec_schema.COLUMN_ROLES)
    assert _prop(root, "spec.dataset.columns")["maxProperties"] == len(spec_schema.COLUMN_ROLES)


def test_test_set_name_rule_uses_the_spec_pattern_and_limit(root):
    node = _prop(root, "spec.dataset.test")
    (rule,) = node["x-kubernetes-validations"]
    assert _quoted(rule["rule"]) == [spec_schema.TEST_SET_NAME_PATTERN]
    assert node["maxProperties"] == spec_schema.MAX_TEST_SETS


def test_task_enum_is_the_spec_tasks(root):
    assert _prop(root, "spec.task")["enum"] == list(spec_schema.TASKS)


def test_name_rule_uses_the_spec_length_limit(root):
    rule = root["x-kubernetes-validations"][0]["rule"]
    assert f"self.metadata.name.size() <= {spec_schema.MAX_NAME_LENGTH}" in rule


def test_search_name_rule_uses_the_spec_search_length_limit(root):
    rule = root["x-kubernetes-validations"][1]["rule"]
    assert "has(self.spec.hyperparameterSearch)" in rule
    assert f"self.metadata.name.size() <= {spec_schema.MAX_SEARCH_NAME_LENGTH}" in rule
    assert (
        len(names.trial_name("a" * spec_schema.MAX_SEARCH_NAME_LENGTH, spec_schema.MAX_SEARCH_TRIALS - 1))
        == spec_schema.MAX_NAME_LENGTH
    )


def test_search_path_rules_list_exactly_the_searchable_paths(root):
    paths = spec.SEARCH_PATHS
    known, numeric = _prop(root, "spec.hyperparameterSearch.parameters")["x-kubernetes-validations"]
    assert _quoted(known["rule"]) == paths.accepted_keys()
    assert _quoted(numeric["rule"]) == [k for k in paths.accepted_keys() if paths.parameter_kind(k) != "categorical"]


def test_search_bounds_are_the_spec_constants(root):
    search = _prop(root, "spec.hyperparameterSearch")
    assert search["properties"]["maxTrials"]["maximum"] == spec_schema.MAX_SEARCH_TRIALS
    assert search["properties"]["parameters"]["maxProperties"] == spec_schema.MAX_SEARCH_PARAMETERS
    assert search["properties"]["parameters"]["additionalProperties"]["properties"]["values"]["maxItems"] == (
        spec_schema.MAX_SEARCH_VALUES
    )
    status = root["properties"]["status"]["properties"]
    assert status["trials"]["maxItems"] == spec_schema.MAX_SEARCH_TRIALS


# --- CRD shape --------------------------------------------------------------------------------------


def test_crd_names_the_api_the_operator_watches(crd):
    body = crd["spec"]
    assert crd["metadata"]["name"] == f"{names.PLURAL}.{names.GROUP}"
    assert body["group"] == names.GROUP and body["scope"] == "Namespaced"
    assert body["names"] == {
        "kind": names.KIND,
        "listKind": f"{names.KIND}List",
        "plural": names.PLURAL,
        "singular": "finetunejob",
        "shortNames": ["ftj", "ftjob"],
        "categories": ["ml", "finetune"],
    }
    [version] = body["versions"]
    assert (version["name"], version["served"], version["storage"]) == (names.VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns_in_order(crd):
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"].upper(), c["jsonPath"], c.get("priority", 0)) for c in columns] == [
        ("PHASE", ".status.phase", 0),
        ("PROGRESS", ".status.progress.percent", 0),
        ("STEP", ".status.progress.step", 0),
        ("LOSS", ".status.progress.loss", 0),
        ("ETA", ".status.progress.eta", 0),
        ("BEST", ".status.bestTrial.objectiveValue", 0),
        ("GPUS", ".status.gpus", 0),
        ("QUEUE", ".spec.scheduling.queueName", 0),
        ("AGE", ".metadata.creationTimestamp", 0),
        ("REASON", ".status.reason", 1),
        ("RESTARTS", ".status.retries", 1),
    ]


def test_every_printer_column_points_at_a_declared_field(crd, root):
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = column["jsonPath"].lstrip(".")
        if path.startswith("metadata."):
            continue
        assert _prop(root, path)["type"] in ("string", "integer", "number"), column


def _walk_nodes(node: dict[str, Any], path: str = ""):
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from _walk_nodes(child, f"{path}.{key}" if path else key)
    if isinstance(node.get("items"), dict):
        yield from _walk_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk_nodes(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural_every_node_has_a_type(root):
    # Structural schemas exempt int-or-string and preserve-unknown-fields nodes (a search's mixed `values`).
    untyped = [
        p
        for p, n in _walk_nodes(root)
        if "type" not in n
        and not n.get("x-kubernetes-int-or-string")
        and not n.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert untyped == []


def test_unknown_fields_are_preserved_only_where_values_are_free_form(root):
    # The core/v1 types passed through to the pods (tolerations, affinity, valueFrom) are typed like core/v1's,
    # so the CRD refuses what the Job API would refuse (spec/core_v1.py).
    preserved = sorted(p for p, n in _walk_nodes(root) if n.get("x-kubernetes-preserve-unknown-fields"))
    assert preserved == [
        "spec.hyperparameterSearch.parameters{}.values[]",
        "status.bestTrial.parameters",
        "status.search.spec",
        "status.trials[].parameters",
    ]


def test_every_spec_list_and_map_is_bounded_for_cel_cost(root):
    unbounded = [
        p
        for p, n in _walk_nodes(root["properties"]["spec"], "spec")
        if (n.get("type") == "array" and "maxItems" not in n)
        or ("additionalProperties" in n and "maxProperties" not in n)
    ]
    assert unbounded == []


def test_every_string_a_rule_reads_is_bounded(root):
    # Rules read: env names, column role keys (bounded by maxProperties) and the spec's enums.
    assert _prop(root, "spec.env.[].name")["maxLength"] == 256
    assert "enum" in _prop(root, "spec.task") and "enum" in _prop(root, "spec.dataset.format")


def test_every_rule_compiles_and_has_a_message(root):
    environment = celpy.Environment()
    rules = [r for _, n in _walk_nodes(root) for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 11
    for rule in rules:
        environment.compile(rule["rule"])
        assert rule.get("message"), rule["rule"]


def test_status_is_typed_with_map_keyed_conditions(root):
    status = root["properties"]["status"]
    assert not status.get("x-kubernetes-preserve-unknown-fields")
    assert status["properties"]["phase"]["enum"] == [
        "Pending",
        "Queued",
        "Starting",
        "Running",
        "Succeeded",
        "Failed",
        "Suspended",
    ]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert status["properties"]["failure"]["properties"]["logTail"]["maxLength"] == 4096
    assert status["properties"]["progress"]["properties"]["evalMetrics"]["maxProperties"] == 16
    assert set(status["properties"]) >= {
        "phase",
        "reason",
        "message",
        "conditions",
        "observedGeneration",
        "jobName",
        "startTime",
        "completionTime",
        "retries",
        "gpus",
        "queue",
        "progress",
        "checkpoint",
        "timeToFirstStepSeconds",
        "gpuSeconds",
        "failure",
        "metrics",
        "outputUri",
    }


def test_status_carries_the_search_and_its_trials(root):
    status = root["properties"]["status"]["properties"]
    assert set(status["search"]["properties"]) == {"algorithm", "metric", "goal", "spec", "trials"}
    assert set(status["search"]["properties"]["trials"]["properties"]) == {
        "total",
        "pending",
        "running",
        "succeeded",
        "failed",
        "earlyStopped",
    }
    trial = status["trials"]["items"]["properties"]
    assert trial["state"]["enum"] == ["Pending", "Running", "Succeeded", "Failed", "EarlyStopped"]
    assert set(trial) == {
        "name",
        "index",
        "parameters",
        "state",
        "objectiveValue",
        "step",
        "totalSteps",
        "history",
        "reason",
        "message",
        "startTime",
        "completionTime",
        "outputUri",
        "gpuSeconds",
        "metrics",
    }
    assert status["trials"]["items"]["properties"]["history"]["maxItems"] == 32
    assert set(status["bestTrial"]["properties"]) == {
        "name",
        "index",
        "parameters",
        "objectiveValue",
        "outputUri",
        "metrics",
    }
    assert status["bestTrial"]["properties"]["metrics"]["maxProperties"] == 64
