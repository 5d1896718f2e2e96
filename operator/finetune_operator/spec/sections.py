"""The sections of a FineTuneJob spec, one model each (but hyperparameterSearch, in hyperparameter_search.py).

Each mirrors its part of the CRD's openAPIV3Schema field for field, and adds the rules within one section
that a schema cannot state (FieldRuleError names the field to blame).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from .core_v1 import Affinity, EnvVarSource, LabelMap, PassThrough, Toleration
from .errors import FieldRuleError, shorten
from .schema import (
    COLUMN_ROLES,
    CONFIG_MAP_KEY_PATTERN,
    DATA_URI_PATTERN,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_MAX_LENGTH,
    DNS_SUBDOMAIN_PATTERN,
    ENV_NAME_PATTERN,
    INT32_MAX,
    MAX_TEST_SETS,
    METRIC_PATTERN,
    MODEL_URI_PATTERN,
    OUTPUT_URI_PATTERN,
    QUANTITY_PATTERN,
    RESERVED_ENV,
    RESOURCE_NAME_MAX_LENGTH,
    RESOURCE_NAME_PATTERN,
    RESOURCE_PREFIX_MAX_LENGTH,
    TEST_SET_NAME_PATTERN,
    ColumnName,
    DatasetFormat,
    EvalStrategy,
    LabelName,
    MethodType,
    ModuleName,
    Precision,
    SpecModel,
)


class ModelSource(SpecModel):
    source: str = Field(pattern=MODEL_URI_PATTERN, max_length=1024)
    revision: str = Field(default="main", pattern=r"^[A-Za-z0-9._/-]{1,128}$", max_length=128)


DataUri = Annotated[str, Field(pattern=DATA_URI_PATTERN, max_length=1024)]


class Dataset(SpecModel):
    train: str = Field(pattern=DATA_URI_PATTERN, max_length=1024)
    validation: str | None = Field(default=None, pattern=DATA_URI_PATTERN, max_length=1024)
    validation_split: float | None = Field(default=None, gt=0.0, lt=1.0)
    # Evaluated before and after fine-tuning to measure what was forgotten.
    retention: str | None = Field(default=None, pattern=DATA_URI_PATTERN, max_length=1024)
    # Named held-out test sets (name -> URI), evaluated once after training: metrics test_<name>_*.
    test: dict[str, DataUri] = Field(default_factory=dict, max_length=MAX_TEST_SETS)
    format: DatasetFormat = "csv"
    columns: dict[str, ColumnName] = Field(default_factory=dict, max_length=len(COLUMN_ROLES))
    # Label names in id order; inferred from the training data when empty.
    labels: list[LabelName] = Field(default_factory=list, max_length=10000)
    max_train_samples: int | None = Field(default=None, ge=1, le=INT32_MAX)

    @field_validator("columns")
    @classmethod
    def _known_roles(cls, columns: dict[str, str]) -> dict[str, str]:
        for role in columns:
            if role not in COLUMN_ROLES:
                raise ValueError(
                    f"unknown column role {role[:64]!r}; valid roles are {', '.join(COLUMN_ROLES)} "
                    "(e.g. columns: {text: sentence, label: label})"
                )
        return columns

    @field_validator("test")
    @classmethod
    def _test_set_names(cls, test: dict[str, str]) -> dict[str, str]:
        for name in test:
            if not re.match(TEST_SET_NAME_PATTERN, name):
                raise ValueError(
                    f"test set name {shorten(name)} must be 1-32 lower-case letters, digits and underscores, "
                    "starting with a letter (e.g. test: {in_domain: pvc://data/test.csv})"
                )
        return test

    @model_validator(mode="after")
    def _one_validation_source(self) -> Dataset:
        if self.validation is not None and self.validation_split is not None:
            raise FieldRuleError(
                "validationSplit",
                "set either validation (a file) or validationSplit (a fraction of train), not both",
            )
        return self


class LoraSettings(SpecModel):
    r: int = Field(default=8, ge=1, le=1024)
    alpha: float = Field(default=16.0, gt=0, le=4096)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    # Empty: chosen per architecture by the trainer.
    target_modules: list[ModuleName] = Field(default_factory=list, max_length=64)
    merge_adapter: bool = False


class FreezeSettings(SpecModel):
    # How many of the top transformer layers train (the task head always trains).
    trainable_layers: int = Field(default=2, ge=0, le=1000)


class Method(SpecModel):
    type: MethodType = "full"
    lora: LoraSettings | None = None
    freeze: FreezeSettings | None = None

    @model_validator(mode="after")
    def _settings_match_type(self) -> Method:
        if self.lora is not None and self.type != "lora":
            raise FieldRuleError("lora", f"lora settings are only allowed with type: lora (type is {self.type!r})")
        if self.freeze is not None and self.type != "freeze":
            raise FieldRuleError(
                "freeze", f"freeze settings are only allowed with type: freeze (type is {self.type!r})"
            )
        return self


class Hyperparameters(SpecModel):
    learning_rate: float = Field(default=2.0e-5, gt=0.0, le=1.0)
    epochs: float = Field(default=3, gt=0, le=1000)
    # Overrides epochs when set: the total optimizer steps.
    max_steps: int | None = Field(default=None, ge=1, le=100_000_000)
    batch_size: int = Field(default=16, ge=1, le=65536)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=4096)
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    max_seq_length: int = Field(default=128, ge=8, le=131072)
    precision: Precision = "auto"
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    eval_strategy: EvalStrategy = "epoch"
    eval_steps: int | None = Field(default=None, ge=1, le=100_000_000)

    @model_validator(mode="after")
    def _eval_steps_with_steps(self) -> Hyperparameters:
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise FieldRuleError("evalSteps", "evalStrategy: steps needs evalSteps (e.g. evalSteps: 100)")
        return self


class EarlyStopping(SpecModel):
    metric: str = Field(default="eval_loss", pattern=METRIC_PATTERN)
    patience: int = Field(default=3, ge=1, le=1000)
    # Unset: inferred from the metric's name (loss-like metrics are minimised).
    greater_is_better: bool | None = None


class Augmentation(SpecModel):
    enabled: bool = False
    # Text only: probability of replacing a token with the mask/unknown token during training.
    token_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class Regularization(SpecModel):
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    early_stopping: EarlyStopping | None = None
    augmentation: Augmentation = Field(default_factory=Augmentation)


class Resources(SpecModel):
    nodes: int = Field(default=1, ge=1, le=1024)
    gpus_per_node: int = Field(default=1, ge=0, le=64)
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu", pattern=RESOURCE_NAME_PATTERN, max_length=RESOURCE_NAME_MAX_LENGTH
    )
    cpu: str | None = Field(default=None, pattern=QUANTITY_PATTERN, max_length=64)
    memory: str | None = Field(default=None, pattern=QUANTITY_PATTERN, max_length=64)

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity_as_string(cls, value: Any) -> Any:
        # Users write cpu: 8 as often as cpu: "8"; both mean the same quantity.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("gpu_resource_name")
    @classmethod
    def _extended_resource_name(cls, name: str) -> str:
        # IsExtendedResourceName: "requests." + name must be a qualified name too.
        prefix = name.partition("/")[0]
        if name.startswith("requests.") or len(prefix) > RESOURCE_PREFIX_MAX_LENGTH:
            raise ValueError(
                f"{shorten(name)} is not an extended resource name: it may not start with 'requests.' and its "
                f"domain is at most {RESOURCE_PREFIX_MAX_LENGTH} characters (e.g. nvidia.com/gpu)"
            )
        return name


class Scheduling(SpecModel):
    """What the trainer pods are scheduled with; all but queueName go into the pod template as written."""

    # Kueue's queue-name label: a LocalQueue name (Kueue's webhook checks IsDNS1123Subdomain) that is also a
    # label value (at most 63 characters).
    queue_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=63)
    priority_class_name: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX_LENGTH
    )
    node_selector: LabelMap = Field(default_factory=dict, max_length=64)
    tolerations: list[Annotated[dict[str, Any], PassThrough(Toleration)]] = Field(default_factory=list, max_length=64)
    affinity: Annotated[dict[str, Any], PassThrough(Affinity)] = Field(default_factory=dict)
    # core/v1 does not check schedulerName's form (a pod naming no scheduler just stays Pending); scheduler
    # names are DNS subdomains in practice, and this one refuses the typo early.
    scheduler_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX_LENGTH)


class Output(SpecModel):
    uri: str = Field(pattern=OUTPUT_URI_PATTERN, max_length=1024)
    checkpoint_steps: int = Field(default=200, ge=1, le=10_000_000)
    checkpoints_to_keep: int = Field(default=2, ge=1, le=100)


class RunPolicy(SpecModel):
    backoff_limit: int = Field(default=3, ge=0, le=100)
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=INT32_MAX)
    startup_deadline_seconds: int = Field(default=1800, ge=1, le=INT32_MAX)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=INT32_MAX)
    suspend: bool = False
    termination_grace_period_seconds: int = Field(default=120, ge=0, le=3600)


class SecretKeyRef(SpecModel):
    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    key: str = Field(default="token", pattern=CONFIG_MAP_KEY_PATTERN, max_length=DNS_SUBDOMAIN_MAX_LENGTH)


class SecretRef(SpecModel):
    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)


class Secrets(SpecModel):
    hf_token: SecretKeyRef | None = None
    s3_credentials: SecretRef | None = None


class EnvVar(SpecModel):
    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=256)
    value: str | None = Field(default=None, max_length=32768)
    value_from: Annotated[dict[str, Any], PassThrough(EnvVarSource)] | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_ENV:
            raise ValueError(f"{name} is set by the operator for distributed training; remove it from env")
        return name

    @model_validator(mode="after")
    def _value_or_value_from(self) -> EnvVar:
        # validateEnvVarValueFrom: "may not be specified when `value` is not empty".
        if self.value_from is not None and self.value:
            raise FieldRuleError(
                "valueFrom",
                "set either value or valueFrom, not both (the trainer would get valueFrom and never see value)",
            )
        return self
