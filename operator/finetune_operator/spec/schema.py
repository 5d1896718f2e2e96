"""The FineTuneJob spec's vocabulary, which the CRD's openAPIV3Schema (manifests/crd/finetunejobs.yaml) repeats:
enums, URI and name patterns, bounds, and the base of every spec model (camelCase on the wire, strict JSON types).

tests/operator/test_crd_agreement.py holds the CRD and these constants equal.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Task = Literal[
    "text-classification",
    "token-classification",
    "causal-lm",
    "seq2seq",
    "image-classification",
    "audio-classification",
    "speech-recognition",
]
TASKS = get_args(Task)
DatasetFormat = Literal["csv", "json", "jsonl", "parquet", "imagefolder", "audiofolder"]
MethodType = Literal["full", "lora", "freeze"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
EvalStrategy = Literal["epoch", "steps", "no"]

# One pattern per URI family; the CRD carries the same strings (a test keeps them equal).
_PVC = r"pvc://[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(/[^\s]*)?"
_S3 = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?"
_FILE = r"file:///[^\s]*"
_HF = r"hf://[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?"
MODEL_URI_PATTERN = rf"^({_HF}|{_PVC}|{_S3}|{_FILE})$"
DATA_URI_PATTERN = rf"^({_HF}|{_PVC}|{_S3}|{_FILE})$"
OUTPUT_URI_PATTERN = rf"^({_PVC}|{_S3}|{_FILE})$"
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
METRIC_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$"
# A named test set (dataset.test): its metrics are test_<name>_accuracy, test_<name>_loss, ..., so the name is
# a metric-name fragment short enough to leave room for the prefix and the longest metric suffix.
TEST_SET_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
MAX_TEST_SETS = 8

# Kubernetes names, as k8s.io/apimachinery/pkg/util/validation checks them. The patterns write '.' as [.], never
# as \., so a CEL rule can quote them verbatim inside a string literal.
# IsDNS1123Label: a Service, namespace, container or Secret-in-this-API name.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# IsDNS1123Subdomain: lowercase DNS labels joined by '.', at most 253 characters (PriorityClass, ConfigMap names).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_MAX_LENGTH = 253
# IsQualifiedName (a label key, a taint key, a topology key): an optional DNS-subdomain prefix and '/', then a
# name of 1-63 alphanumerics, '-', '_' or '.' that starts and ends alphanumeric. The prefix's own limit (253)
# is LONG_PREFIX_PATTERN's: a regular expression cannot bound the length of a repeated group.
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
QUALIFIED_NAME_PATTERN = rf"^({_SUBDOMAIN}/)?{_NAME}$"
QUALIFIED_NAME_MAX_LENGTH = DNS_SUBDOMAIN_MAX_LENGTH + 1 + 63
# A toleration's key may be empty (with operator Exists: every taint).
OPTIONAL_QUALIFIED_NAME_PATTERN = rf"^(({_SUBDOMAIN}/)?{_NAME})?$"
# What makes a qualified name's prefix too long: more than 253 characters before the '/'.
LONG_PREFIX_PATTERN = rf"^[^/]{{{DNS_SUBDOMAIN_MAX_LENGTH + 1},}}/"
# IsEnvVarName: [-._a-zA-Z][-._a-zA-Z0-9]*, and not '.', '..' or anything starting with '..' (hasChDirPrefix).
# Kubernetes 1.32+ (RelaxedEnvironmentVariableValidation) accepts more; this is what every version accepts.
ENV_NAME_PATTERN = r"^([-_a-zA-Z]|[.][-_a-zA-Z0-9])[-._a-zA-Z0-9]*$"
# IsConfigMapKey (a ConfigMap or Secret key): [-._a-zA-Z0-9]+, at most 253, and not '.', '..' or '..'-prefixed.
CONFIG_MAP_KEY_PATTERN = r"^[.]?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"
# A GPU is an extended resource (validateContainerResourceName, IsExtendedResourceName): a domain-prefixed
# qualified name such as nvidia.com/gpu. A name without a domain is one of the standard resources (cpu, memory,
# ephemeral-storage, hugepages-*), which the pod already requests. "requests." + the name must itself be a
# qualified name, so the name may not start with "requests." and its prefix is at most 253 - 9 = 244 characters.
RESOURCE_NAME_PATTERN = rf"^{_SUBDOMAIN}/{_NAME}$"
RESOURCE_PREFIX_MAX_LENGTH = DNS_SUBDOMAIN_MAX_LENGTH - len("requests.")
RESOURCE_NAME_MAX_LENGTH = RESOURCE_PREFIX_MAX_LENGTH + 1 + 63
RESOURCE_LONG_PREFIX_PATTERN = rf"^[^/]{{{RESOURCE_PREFIX_MAX_LENGTH + 1},}}/"
# An env var's valueFrom.fieldRef.fieldPath: validEnvDownwardAPIFieldPathExpressions, metadata.labels['<label key>']
# or metadata.annotations['<key>'] (validateObjectFieldSelector; an annotation key is checked lowercased).
_SUBSCRIPT_KEY = rf"({_SUBDOMAIN}/)?{_NAME}"
_ANNOTATION_KEY = _SUBSCRIPT_KEY.replace("[a-z0-9]", "[A-Za-z0-9]").replace("[-a-z0-9]", "[-A-Za-z0-9]")
FIELD_PATH_PATTERN = (
    r"^(metadata[.](name|namespace|uid)|spec[.](nodeName|serviceAccountName)|status[.](hostIP|hostIPs|podIP|podIPs)"
    rf"|metadata[.]labels\['{_SUBSCRIPT_KEY}'\]|metadata[.]annotations\['{_ANNOTATION_KEY}'\])$"
)
# validContainerResourceFieldPathExpressions, and the hugepages prefixes.
RESOURCE_FIELD_PATTERN = r"^(limits|requests)[.](cpu|memory|ephemeral-storage|hugepages-.*)$"
# validContainerResourceDivisorForCPU / ...ForMemory (as Quantity.String() writes them), and 0 (unset).
CPU_DIVISORS = ("0", "1m", "1")
MEMORY_DIVISORS = ("0", "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")
# An image reference (registry/path:tag@digest) or empty for the operator's default; no spaces or shell
# metacharacters, so a value can never smuggle a command into anything that renders it.
IMAGE_PATTERN = r"^([a-zA-Z0-9][a-zA-Z0-9._/:@+-]*)?$"
# IsValidLabelValue: empty, or up to 63 alphanumerics, '-', '_' or '.' starting and ending alphanumeric.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
MODULE_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
COLUMN_ROLES = (
    "text",
    "textPair",
    "label",
    "tokens",
    "tags",
    "prompt",
    "response",
    "source",
    "target",
    "image",
    "audio",
    "transcript",
)

# The env vars the operator sets for the distributed contract; a user value would silently break it.
RESERVED_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "NODE_RANK",
    "LOCAL_RANK",
    "NPROC_PER_NODE",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
    "PET_NNODES",
    "PET_NODE_RANK",
    "PET_NPROC_PER_NODE",
    "FINETUNE_CONFIG",
    "FINETUNE_JOB_NAME",
    "FINETUNE_JOB_NAMESPACE",
    "FINETUNE_VOLUME_MOUNTS",
    "NNODES",
    "FINETUNE_TERMINATION_LOG",
    "FINETUNE_PROGRESS_URL",
    "FINETUNE_PROGRESS_TOKEN_FILE",
    "FINETUNE_PROGRESS_CA_FILE",
    "FINETUNE_PROGRESS_INTERVAL_SECONDS",
)

# Upper bound of counters and durations that have no natural limit: the int32 range the CRD declares.
INT32_MAX = 2**31 - 1

ColumnName = Annotated[str, Field(min_length=1, max_length=256)]
LabelName = Annotated[str, Field(max_length=256)]
ModuleName = Annotated[str, Field(max_length=128, pattern=MODULE_NAME_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
DnsLabel = Annotated[str, Field(max_length=63, pattern=DNS_LABEL_PATTERN)]
DnsSubdomain = Annotated[str, Field(max_length=DNS_SUBDOMAIN_MAX_LENGTH, pattern=DNS_SUBDOMAIN_PATTERN)]
ConfigMapKey = Annotated[str, Field(max_length=DNS_SUBDOMAIN_MAX_LENGTH, pattern=CONFIG_MAP_KEY_PATTERN)]

# The longest child name is "<name>-trainer-<index>" for the rank pods' hostnames (a DNS label,
# at most 63 characters), so the FineTuneJob's own name must leave room for the suffix.
MAX_NAME_LENGTH = 45
# A search's trials run as jobs named "<name>-t<index>" (index < MAX_SEARCH_TRIALS, so at most "-t99"):
# each trial name must itself fit MAX_NAME_LENGTH.
MAX_SEARCH_TRIALS = 100
MAX_SEARCH_NAME_LENGTH = MAX_NAME_LENGTH - len(f"-t{MAX_SEARCH_TRIALS - 1}")
MAX_SEARCH_PARAMETERS = 16
MAX_SEARCH_VALUES = 64


class SpecModel(BaseModel):
    """A section of the spec: field names are camelCase on the wire (as users write them) and snake_case in
    Python; unknown fields are refused and parsed values are frozen."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # The API server only ever stores JSON types the CRD schema allows ("16" is not an integer there);
        # strict parsing keeps `parse_spec` from accepting what `kubectl apply` would refuse.
        strict=True,
    )
