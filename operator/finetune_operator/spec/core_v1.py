"""The core/v1 types a FineTuneJob passes through to its trainer pods (tolerations, affinity, an env var's
valueFrom), typed, so that a spec the Job API would refuse is refused here first, naming the field.

Each model refuses what k8s.io/kubernetes/pkg/apis/core/validation refuses in a pod template (ValidateTolerations,
validateAffinity, validateEnvVarValueFrom and what they call), field for field with the CRD's schema and CEL rules.
The spec keeps these fields as the JSON the user wrote (`PassThrough`): the builders copy them into the pod
template as they are, and a job's spec hash does not change with this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, GetCoreSchemaHandler, field_validator, model_validator
from pydantic_core import core_schema

from .errors import FieldRuleError, shorten
from .schema import (
    CPU_DIVISORS,
    DNS_SUBDOMAIN_MAX_LENGTH,
    FIELD_PATH_PATTERN,
    MEMORY_DIVISORS,
    OPTIONAL_QUALIFIED_NAME_PATTERN,
    QUALIFIED_NAME_MAX_LENGTH,
    QUALIFIED_NAME_PATTERN,
    QUANTITY_PATTERN,
    RESOURCE_FIELD_PATTERN,
    ConfigMapKey,
    DnsLabel,
    DnsSubdomain,
    LabelValue,
    SpecModel,
)


@dataclass(frozen=True)
class PassThrough:
    """`Annotated[dict[str, Any], PassThrough(Model)]`: the value must validate as `Model`, and stays the JSON
    object it was (so it reaches the pod template exactly as written). Errors carry Model's field paths."""

    model: type[BaseModel]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def keep_the_json(value: Any, validate: core_schema.ValidatorFunctionWrapHandler) -> Any:
            validate(value)
            return value

        return core_schema.no_info_wrap_validator_function(
            keep_the_json,
            handler.generate_schema(self.model),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda value: value),
        )


# --- Names ------------------------------------------------------------------------------------------------


# How the CRD's rules describe a label key (they cannot quote a quote inside their messages).
LABEL_KEY_RULE = (
    f"an optional DNS-subdomain prefix of at most {DNS_SUBDOMAIN_MAX_LENGTH} characters and a slash, then a name of "
    "at most 63 letters, digits, dashes, underscores and dots that starts and ends with a letter or digit "
    "(e.g. nvidia.com/gpu.product or disktype)"
)


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a qualified name (IsQualifiedName: a label key), or None."""
    if not re.fullmatch(QUALIFIED_NAME_PATTERN, key) or len(key) > QUALIFIED_NAME_MAX_LENGTH:
        return f"every key must be a label key, and {shorten(key)} is not: {LABEL_KEY_RULE}"
    return _prefix_problem(key)


def _prefix_problem(key: str) -> str | None:
    prefix, slash, _ = key.partition("/")
    if slash and len(prefix) > DNS_SUBDOMAIN_MAX_LENGTH:
        return (
            f"the prefix before the slash must be a DNS subdomain of at most {DNS_SUBDOMAIN_MAX_LENGTH} characters "
            f"({shorten(key)} has one of {len(prefix)}), e.g. nvidia.com/gpu"
        )
    return None


def _short_prefix(key: str) -> str:
    problem = _prefix_problem(key)
    if problem:
        raise ValueError(problem)
    return key


def _label_keys(mapping: dict[str, str]) -> dict[str, str]:
    for key in mapping:
        problem = label_key_problem(key)
        if problem:
            raise ValueError(problem)
    return mapping


QualifiedName = Annotated[
    str,
    Field(max_length=QUALIFIED_NAME_MAX_LENGTH, pattern=QUALIFIED_NAME_PATTERN),
    AfterValidator(_short_prefix),
]
OptionalQualifiedName = Annotated[
    str,
    Field(max_length=QUALIFIED_NAME_MAX_LENGTH, pattern=OPTIONAL_QUALIFIED_NAME_PATTERN),
    AfterValidator(_short_prefix),
]
# A map from label keys to label values (nodeSelector, matchLabels); the keys are checked by `_label_keys`.
LabelMap = Annotated[dict[str, LabelValue], AfterValidator(_label_keys)]
Weight = Annotated[int, Field(ge=1, le=100)]

# Bounds the Job API does not have, so that the CRD's CEL rules have a bounded cost.
MAX_TERMS = 32
MAX_VALUES = 256
MAX_LABELS = 64
MAX_NAMESPACES = 64


# --- Tolerations (ValidateTolerations) ---------------------------------------------------------------------


class Toleration(SpecModel):
    key: OptionalQualifiedName | None = None
    # Empty means Equal.
    operator: Literal["Equal", "Exists", ""] | None = None
    value: LabelValue | None = None
    # Empty means every effect.
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _rules(self) -> Toleration:
        exists = self.operator == "Exists"
        if not self.key and not exists:
            raise FieldRuleError(
                "operator",
                f"operator must be Exists when key is empty (got {shorten(self.operator or 'Equal')}): a toleration "
                "without a key matches every taint, e.g. {operator: Exists} or {key: nvidia.com/gpu, operator: Exists}",
            )
        if exists and self.value:
            raise FieldRuleError(
                "value",
                f"value must be empty when operator is Exists (got {shorten(self.value)}); "
                "use operator: Equal to match one value, e.g. {key: gpu, operator: Equal, value: h100}",
            )
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise FieldRuleError(
                "tolerationSeconds",
                f"tolerationSeconds applies only to effect: NoExecute (effect is {shorten(self.effect or '')}), "
                "e.g. {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, "
                "tolerationSeconds: 300}",
            )
        return self


# --- Node affinity (validateNodeAffinity, ValidateNodeSelectorRequirement) ---------------------------------

NodeSelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]


def check_values_for_operator(operator: str, values: list[str] | None) -> None:
    """In/NotIn need values, Exists/DoesNotExist take none, Gt/Lt exactly one (node and label selectors)."""
    count = len(values or [])
    if operator in ("In", "NotIn") and count == 0:
        raise FieldRuleError(
            "values",
            f"values must not be empty when operator is {operator}, e.g. {{key: gpu, operator: In, values: [h100]}}",
        )
    if operator in ("Exists", "DoesNotExist") and count > 0:
        raise FieldRuleError(
            "values", f"values must be empty when operator is {operator} (got {count}); use In to match values"
        )
    if operator in ("Gt", "Lt") and count != 1:
        raise FieldRuleError(
            "values",
            f"operator {operator} takes exactly one value, an integer (got {count}), "
            'e.g. {key: example.com/cores, operator: Gt, values: ["8"]}',
        )


class NodeSelectorRequirement(SpecModel):
    """A matchExpressions entry of required node affinity: its values must be label values."""

    key: QualifiedName
    operator: NodeSelectorOperator
    values: list[LabelValue] | None = Field(default=None, max_length=MAX_VALUES)

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> NodeSelectorRequirement:
        check_values_for_operator(self.operator, self.values)
        return self


class PreferredNodeSelectorRequirement(SpecModel):
    """A matchExpressions entry of preferred node affinity: any values (the Job API allows values no label has)."""

    key: QualifiedName
    operator: NodeSelectorOperator
    values: list[str] | None = Field(default=None, max_length=MAX_VALUES)

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> PreferredNodeSelectorRequirement:
        check_values_for_operator(self.operator, self.values)
        return self


class NodeFieldSelectorRequirement(SpecModel):
    """A matchFields entry (ValidateNodeFieldSelectorRequirement): metadata.name In/NotIn one node name."""

    key: Literal["metadata.name"]
    operator: Literal["In", "NotIn"]
    values: list[DnsSubdomain] = Field(min_length=1, max_length=1)


class NodeSelectorTerm(SpecModel):
    match_expressions: list[NodeSelectorRequirement] | None = Field(default=None, max_length=MAX_TERMS)
    match_fields: list[NodeFieldSelectorRequirement] | None = Field(default=None, max_length=MAX_TERMS)


class PreferredNodeSelectorTerm(SpecModel):
    match_expressions: list[PreferredNodeSelectorRequirement] | None = Field(default=None, max_length=MAX_TERMS)
    match_fields: list[NodeFieldSelectorRequirement] | None = Field(default=None, max_length=MAX_TERMS)


class NodeSelector(SpecModel):
    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=MAX_TERMS)


class PreferredSchedulingTerm(SpecModel):
    weight: Weight
    preference: PreferredNodeSelectorTerm | None = None


class NodeAffinity(SpecModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = Field(
        default=None, max_length=MAX_TERMS
    )


# --- Pod (anti-)affinity (validatePodAffinityTerm, ValidateLabelSelector) ----------------------------------


class LabelSelectorRequirement(SpecModel):
    key: QualifiedName
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] | None = Field(default=None, max_length=MAX_VALUES)

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> LabelSelectorRequirement:
        check_values_for_operator(self.operator, self.values)
        return self


class LabelSelector(SpecModel):
    match_labels: LabelMap | None = Field(default=None, max_length=MAX_LABELS)
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=MAX_TERMS)

    def keys(self) -> set[str]:
        return set(self.match_labels or {}) | {expression.key for expression in self.match_expressions or []}


class PodAffinityTerm(SpecModel):
    label_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    namespaces: list[DnsLabel] | None = Field(default=None, max_length=MAX_NAMESPACES)
    topology_key: QualifiedName
    match_label_keys: list[QualifiedName] | None = Field(default=None, max_length=MAX_TERMS)
    mismatch_label_keys: list[QualifiedName] | None = Field(default=None, max_length=MAX_TERMS)

    @model_validator(mode="after")
    def _label_keys_need_a_selector(self) -> PodAffinityTerm:
        # validateMatchLabelKeysAndMismatchLabelKeys
        for field, keys in (("matchLabelKeys", self.match_label_keys), ("mismatchLabelKeys", self.mismatch_label_keys)):
            if keys and self.label_selector is None:
                raise FieldRuleError(
                    field,
                    f"{field} needs a labelSelector (it adds to it), e.g. labelSelector: {{matchLabels: {{app: x}}}}",
                )
        both = sorted(set(self.match_label_keys or []) & set(self.mismatch_label_keys or []))
        if both:
            raise FieldRuleError(
                "matchLabelKeys",
                f"a key may not be in both matchLabelKeys and mismatchLabelKeys ({shorten(both[0])}); keep one",
            )
        selected = sorted(
            set(self.match_label_keys or []) & (self.label_selector.keys() if self.label_selector else set())
        )
        if selected:
            raise FieldRuleError(
                "matchLabelKeys",
                f"a key may not be in both matchLabelKeys and labelSelector ({shorten(selected[0])}): the API server "
                "adds 'key In (the pod's value)' for it and would refuse every pod; remove it from one of them",
            )
        return self


class WeightedPodAffinityTerm(SpecModel):
    weight: Weight
    pod_affinity_term: PodAffinityTerm


class PodAffinity(SpecModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        default=None, max_length=MAX_TERMS
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = Field(
        default=None, max_length=MAX_TERMS
    )


class Affinity(SpecModel):
    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAffinity | None = None


# --- An env var's valueFrom (validateEnvVarValueFrom) ------------------------------------------------------


class ObjectFieldSelector(SpecModel):
    api_version: Literal["v1"] | None = None
    field_path: str = Field(max_length=512, pattern=FIELD_PATH_PATTERN)


class ResourceFieldSelector(SpecModel):
    container_name: DnsLabel | None = None
    resource: str = Field(max_length=128, pattern=RESOURCE_FIELD_PATTERN)
    divisor: str | None = Field(default=None, max_length=64, pattern=QUANTITY_PATTERN)

    @field_validator("divisor", mode="before")
    @classmethod
    def _quantity_as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _divisor_fits_the_resource(self) -> ResourceFieldSelector:
        if self.divisor is None:
            return self
        cpu = self.resource in ("limits.cpu", "requests.cpu")
        if self.divisor not in (CPU_DIVISORS if cpu else MEMORY_DIVISORS):
            raise FieldRuleError(
                "divisor", f"divisor {shorten(self.divisor)} is not supported here: {divisor_rule(cpu)}"
            )
        return self


def divisor_rule(cpu: bool) -> str:
    """What validateContainerResourceDivisor accepts (the CRD's rule says the same)."""
    if cpu:
        return "only divisors 1m or 1 are supported with a cpu resource, e.g. {resource: limits.cpu, divisor: 1m}"
    return (
        f"only divisors {', '.join(MEMORY_DIVISORS[1:-1])} or {MEMORY_DIVISORS[-1]} are supported with memory, "
        "ephemeral-storage and hugepages, e.g. {resource: limits.memory, divisor: 1Mi}"
    )


class KeySelector(SpecModel):
    """configMapKeyRef / secretKeyRef: a key of a ConfigMap or Secret in the job's namespace."""

    name: DnsSubdomain
    key: ConfigMapKey
    optional: bool | None = None


class EnvVarSource(SpecModel):
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    config_map_key_ref: KeySelector | None = None
    secret_key_ref: KeySelector | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> EnvVarSource:
        sources = [self.field_ref, self.resource_field_ref, self.config_map_key_ref, self.secret_key_ref]
        count = sum(source is not None for source in sources)
        if count != 1:
            raise FieldRuleError(
                "",
                "valueFrom must set exactly one of fieldRef, resourceFieldRef, configMapKeyRef or secretKeyRef "
                f"(it sets {count}), e.g. {{secretKeyRef: {{name: wandb, key: api-key}}}}",
            )
        return self


__all__ = [
    "Affinity",
    "EnvVarSource",
    "LabelMap",
    "PassThrough",
    "Toleration",
    "label_key_problem",
]
