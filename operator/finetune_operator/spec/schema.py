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
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
RESOURCE_NAME_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$"
METRIC_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
# An image reference (registry/path:tag@digest) or empty for the operator's default; no spaces or shell
# metacharacters, so a value can never smuggle a command into anything that renders it.
IMAGE_PATTERN = r"^([a-zA-Z0-9][a-zA-Z0-9._/:@+-]*)?$"
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
    "FINETUNE_PROGRESS_INTERVAL_SECONDS",
)

# Upper bound of counters and durations that have no natural limit: the int32 range the CRD declares.
INT32_MAX = 2**31 - 1

ColumnName = Annotated[str, Field(min_length=1, max_length=256)]
LabelName = Annotated[str, Field(max_length=256)]
ModuleName = Annotated[str, Field(max_length=128, pattern=MODULE_NAME_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]

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
