"""The FineTuneJob spec as a typed model.

It mirrors the CRD's openAPIV3Schema (manifests/crd/finetunejobs.yaml) field for field, and adds the
checks a schema cannot express (child-name lengths, for one). The operator parses every spec through
`parse_spec` before it creates anything: a spec that fails here never gets pods, and the error names
the field, what was given and a valid example.

Field names are camelCase on the wire (as users write them) and snake_case in Python.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .search.paths import SearchablePaths

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
# A spec beyond this many JSON values is abuse (e.g. a YAML alias bomb), not a training job.
MAX_SPEC_VALUES = 100_000

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
SearchAlgorithm = Literal["grid", "random", "bayesian"]
SearchGoal = Literal["maximize", "minimize"]
# An objective whose name contains one of these is an error measure: smaller is better.
MINIMIZED_METRIC_WORDS = ("loss", "perplexity", "wer", "cer")


class _FieldRuleError(ValueError):
    """A cross-field rule broken; `field` is the camelCase path, relative to the model that checks it,
    of the field to blame (the CRD's CEL rule reports the same path through its fieldPath)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # The API server only ever stores JSON types the CRD schema allows ("16" is not an integer there);
        # strict parsing keeps `parse_spec` from accepting what `kubectl apply` would refuse.
        strict=True,
    )


class ModelSource(_Model):
    source: str = Field(pattern=MODEL_URI_PATTERN, max_length=1024)
    revision: str = Field(default="main", pattern=r"^[A-Za-z0-9._/-]{1,128}$", max_length=128)


class Dataset(_Model):
    train: str = Field(pattern=DATA_URI_PATTERN, max_length=1024)
    validation: str | None = Field(default=None, pattern=DATA_URI_PATTERN, max_length=1024)
    validation_split: float | None = Field(default=None, gt=0.0, lt=1.0)
    # Evaluated before and after fine-tuning to measure what was forgotten.
    retention: str | None = Field(default=None, pattern=DATA_URI_PATTERN, max_length=1024)
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

    @model_validator(mode="after")
    def _one_validation_source(self) -> Dataset:
        if self.validation is not None and self.validation_split is not None:
            raise _FieldRuleError(
                "validationSplit",
                "set either validation (a file) or validationSplit (a fraction of train), not both",
            )
        return self


class LoraSettings(_Model):
    r: int = Field(default=8, ge=1, le=1024)
    alpha: float = Field(default=16.0, gt=0, le=4096)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    # Empty: chosen per architecture by the trainer.
    target_modules: list[ModuleName] = Field(default_factory=list, max_length=64)
    merge_adapter: bool = False


class FreezeSettings(_Model):
    # How many of the top transformer layers train (the task head always trains).
    trainable_layers: int = Field(default=2, ge=0, le=1000)


class Method(_Model):
    type: MethodType = "full"
    lora: LoraSettings | None = None
    freeze: FreezeSettings | None = None

    @model_validator(mode="after")
    def _settings_match_type(self) -> Method:
        if self.lora is not None and self.type != "lora":
            raise _FieldRuleError("lora", f"lora settings are only allowed with type: lora (type is {self.type!r})")
        if self.freeze is not None and self.type != "freeze":
            raise _FieldRuleError(
                "freeze", f"freeze settings are only allowed with type: freeze (type is {self.type!r})"
            )
        return self


class Hyperparameters(_Model):
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
            raise _FieldRuleError("evalSteps", "evalStrategy: steps needs evalSteps (e.g. evalSteps: 100)")
        return self


class EarlyStopping(_Model):
    metric: str = Field(default="eval_loss", pattern=METRIC_PATTERN)
    patience: int = Field(default=3, ge=1, le=1000)
    # Unset: inferred from the metric's name (loss-like metrics are minimised).
    greater_is_better: bool | None = None


class Augmentation(_Model):
    enabled: bool = False
    # Text only: probability of replacing a token with the mask/unknown token during training.
    token_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class Regularization(_Model):
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    early_stopping: EarlyStopping | None = None
    augmentation: Augmentation = Field(default_factory=Augmentation)


class Resources(_Model):
    nodes: int = Field(default=1, ge=1, le=1024)
    gpus_per_node: int = Field(default=1, ge=0, le=64)
    gpu_resource_name: str = Field(default="nvidia.com/gpu", pattern=RESOURCE_NAME_PATTERN, max_length=253)
    cpu: str | None = Field(default=None, pattern=QUANTITY_PATTERN, max_length=64)
    memory: str | None = Field(default=None, pattern=QUANTITY_PATTERN, max_length=64)

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity_as_string(cls, value: Any) -> Any:
        # Users write cpu: 8 as often as cpu: "8"; both mean the same quantity.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Scheduling(_Model):
    queue_name: str | None = Field(default=None, pattern=DNS_LABEL_PATTERN, max_length=63)
    priority_class_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN_PATTERN)
    node_selector: dict[str, LabelValue] = Field(default_factory=dict, max_length=64)
    tolerations: list[dict[str, Any]] = Field(default_factory=list, max_length=64)
    affinity: dict[str, Any] = Field(default_factory=dict)
    scheduler_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)


class Output(_Model):
    uri: str = Field(pattern=OUTPUT_URI_PATTERN, max_length=1024)
    checkpoint_steps: int = Field(default=200, ge=1, le=10_000_000)
    checkpoints_to_keep: int = Field(default=2, ge=1, le=100)


class RunPolicy(_Model):
    backoff_limit: int = Field(default=3, ge=0, le=100)
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=INT32_MAX)
    startup_deadline_seconds: int = Field(default=1800, ge=1, le=INT32_MAX)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=INT32_MAX)
    suspend: bool = False
    termination_grace_period_seconds: int = Field(default=120, ge=0, le=3600)


class SecretKeyRef(_Model):
    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    key: str = Field(default="token", pattern=r"^[-._a-zA-Z0-9]{1,253}$")


class SecretRef(_Model):
    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63)


class Secrets(_Model):
    hf_token: SecretKeyRef | None = None
    s3_credentials: SecretRef | None = None


class EnvVar(_Model):
    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=256)
    value: str | None = Field(default=None, max_length=32768)
    value_from: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_ENV:
            raise ValueError(f"{name} is set by the operator for distributed training; remove it from env")
        return name


class SearchObjective(_Model):
    metric: str = Field(pattern=METRIC_PATTERN)
    # Unset: inferred from the metric's name, see `resolved_goal`.
    goal: SearchGoal | None = None

    @property
    def resolved_goal(self) -> SearchGoal:
        """The goal as given, else minimize for error measures (loss, perplexity, wer, cer), else maximize."""
        if self.goal is not None:
            return self.goal
        # Whole words only: eval_answer_f1 contains "wer" but is no error rate.
        words = set(self.metric.lower().split("_"))
        return "minimize" if words & set(MINIMIZED_METRIC_WORDS) else "maximize"


class SearchEarlyStopping(_Model):
    algorithm: Literal["median", "none"] = "median"
    # No trial is stopped before this step.
    min_steps: int = Field(default=0, ge=0, le=INT32_MAX)
    # Completed trials needed before their median is trusted.
    min_trials: int = Field(default=2, ge=1, le=MAX_SEARCH_TRIALS)


SearchValue = bool | int | float | str


def _value_key(value: SearchValue) -> tuple[str, SearchValue]:
    # JSON equality: true is not 1, but 1 and 1.0 are the same number.
    if isinstance(value, bool):
        return "bool", value
    return ("number", value) if isinstance(value, int | float) else ("string", value)


class SearchParameter(_Model):
    """One searched field: categorical `values`, or a range `min`..`max` (with `scale` and optional `step`)."""

    values: list[SearchValue] | None = Field(default=None, min_length=1, max_length=MAX_SEARCH_VALUES)
    min: float | None = None
    max: float | None = None
    scale: Literal["linear", "log"] = "linear"
    # Range only: sample min, min+step, ... (<= max); makes the range finite, which grid needs.
    step: float | None = Field(default=None, gt=0)

    @field_validator("values", mode="before")
    @classmethod
    def _scalar_values(cls, values: Any) -> Any:
        # The CRD cannot type these items (they mix JSON types), so this is the only check that they are scalars.
        if isinstance(values, list):
            for index, value in enumerate(values):
                if not isinstance(value, bool | int | float | str):
                    raise ValueError(f"values must be numbers, strings or booleans; item {index} is {_shorten(value)}")
        return values

    @model_validator(mode="after")
    def _one_form(self) -> SearchParameter:
        has_range = self.min is not None or self.max is not None
        if self.values is not None and has_range:
            raise _FieldRuleError("", "give either values: [...] or a range min/max, not both")
        if self.values is None and (self.min is None or self.max is None):
            raise _FieldRuleError(
                "", "give values (e.g. values: [8, 16, 32]) or both min and max (e.g. min: 1.0e-5, max: 1.0e-3)"
            )
        if self.values is not None:
            if self.step is not None or self.scale == "log":
                raise _FieldRuleError("", "scale: log and step apply to a range (min/max), not to values")
            keys = [_value_key(value) for value in self.values]
            if len(set(keys)) != len(keys):
                raise _FieldRuleError("", "values must be unique")
            return self
        assert self.min is not None and self.max is not None
        if not self.min < self.max:
            raise _FieldRuleError("", f"min must be less than max (min {self.min}, max {self.max})")
        if self.scale == "log" and self.min <= 0:
            raise _FieldRuleError("", f"scale: log needs min > 0 (min is {self.min})")
        if self.scale == "log" and self.step is not None:
            raise _FieldRuleError("", "step cannot be combined with scale: log; remove one of them")
        return self

    @property
    def is_range(self) -> bool:
        return self.values is None

    @property
    def is_finite(self) -> bool:
        """Whether the parameter has a countable set of points (values, or a range with step): grid needs it."""
        return self.values is not None or self.step is not None


class HyperparameterSearch(_Model):
    algorithm: SearchAlgorithm = "bayesian"
    objective: SearchObjective
    max_trials: int = Field(default=10, ge=1, le=MAX_SEARCH_TRIALS)
    parallel_trials: int = Field(default=1, ge=1, le=MAX_SEARCH_TRIALS)
    # The search stops launching trials, and fails, once this many have failed.
    max_failed_trials: int = Field(default=3, ge=0, le=MAX_SEARCH_TRIALS)
    # Unset: derived from the FineTuneJob's uid, so a resumed search samples the same trials.
    seed: int | None = Field(default=None, ge=0, le=INT32_MAX)
    keep_trial_outputs: bool = False
    early_stopping: SearchEarlyStopping | None = None
    # Parameter path (see SEARCH_PATHS, below FineTuneJobSpec) -> what to try.
    parameters: dict[str, SearchParameter] = Field(min_length=1, max_length=MAX_SEARCH_PARAMETERS)

    @model_validator(mode="after")
    def _search_rules(self) -> HyperparameterSearch:
        if self.parallel_trials > self.max_trials:
            raise _FieldRuleError(
                "parallelTrials",
                f"parallelTrials ({self.parallel_trials}) must not exceed maxTrials ({self.max_trials})",
            )
        resolved: dict[str, str] = {}
        for path, parameter in self.parameters.items():
            try:
                full = SEARCH_PATHS.resolve_path(path)
            except ValueError as exc:
                raise _FieldRuleError("parameters", str(exc)) from None
            if full in resolved:
                raise _FieldRuleError(
                    "parameters", f"{resolved[full]!r} and {path!r} both name {full}; keep one of them"
                )
            resolved[full] = path
            _check_parameter_kind(path, SEARCH_PATHS.parameter_kind(full), parameter)
        if self.algorithm == "grid":
            for path, parameter in self.parameters.items():
                if not parameter.is_finite:
                    raise _FieldRuleError(
                        "algorithm",
                        f"algorithm: grid needs every parameter finite, but {path!r} is a range without step: "
                        "give it values or a step (or use algorithm: random or bayesian)",
                    )
        return self


def _check_parameter_kind(path: str, kind: str, parameter: SearchParameter) -> None:
    field = f"parameters.{path}"
    if not parameter.is_range:
        return
    if kind == "categorical":
        raise _FieldRuleError(field, f"{path} is not a number field: give values (e.g. values: [...]), not a range")
    if kind == "int":
        for label, bound in (("min", parameter.min), ("max", parameter.max), ("step", parameter.step)):
            if bound is not None and not float(bound).is_integer():
                raise _FieldRuleError(field, f"{path} is an integer field: {label} must be a whole number, got {bound}")


def _search_points(parameter: SearchParameter) -> list[SearchValue]:
    """The values the semantic check applies: every categorical value, or a range's ends."""
    if parameter.values is not None:
        return list(parameter.values)
    assert parameter.min is not None and parameter.max is not None
    return [parameter.min, parameter.max]


class FineTuneJobSpec(_Model):
    task: Task
    model: ModelSource
    dataset: Dataset
    method: Method = Field(default_factory=Method)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    regularization: Regularization = Field(default_factory=Regularization)
    resources: Resources = Field(default_factory=Resources)
    scheduling: Scheduling = Field(default_factory=Scheduling)
    image: str = Field(default="", pattern=IMAGE_PATTERN, max_length=1024)
    output: Output
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    secrets: Secrets = Field(default_factory=Secrets)
    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    hyperparameter_search: HyperparameterSearch | None = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> FineTuneJobSpec:
        fmt = self.dataset.format
        if fmt == "imagefolder" and self.task != "image-classification":
            raise _FieldRuleError(
                "dataset.format",
                f"dataset.format imagefolder needs task: image-classification (task is {self.task!r})",
            )
        if fmt == "audiofolder" and self.task not in ("audio-classification", "speech-recognition"):
            raise _FieldRuleError(
                "dataset.format",
                f"dataset.format audiofolder needs task: audio-classification or speech-recognition "
                f"(task is {self.task!r})",
            )
        early = self.regularization.early_stopping
        has_eval = self.dataset.validation is not None or self.dataset.validation_split is not None
        if early is not None and not has_eval:
            raise _FieldRuleError(
                "regularization.earlyStopping",
                "regularization.earlyStopping needs an evaluation set: set dataset.validation "
                "or dataset.validationSplit (e.g. validationSplit: 0.1)",
            )
        if early is not None and self.hyperparameters.eval_strategy == "no":
            raise _FieldRuleError(
                "regularization.earlyStopping",
                "regularization.earlyStopping needs evaluation: hyperparameters.evalStrategy must not be 'no'",
            )
        if self.hyperparameter_search is not None:
            self._check_search(has_eval)
        return self

    def _check_search(self, has_eval: bool) -> None:
        search = self.hyperparameter_search
        assert search is not None
        metric = search.objective.metric
        if not has_eval:
            raise _FieldRuleError(
                "hyperparameterSearch.objective",
                f"the objective {metric} is measured on an evaluation set: set dataset.validation "
                "or dataset.validationSplit (e.g. validationSplit: 0.1)",
            )
        if self.hyperparameters.eval_strategy == "no":
            raise _FieldRuleError(
                "hyperparameterSearch.objective",
                f"the objective {metric} needs evaluation: hyperparameters.evalStrategy must not be 'no'",
            )
        self._check_trial_specs()

    def _check_trial_specs(self) -> None:
        """Every value a search may apply must give a valid job; blame the parameter, quote the job's error."""
        search = self.hyperparameter_search
        assert search is not None
        base = self.model_dump(by_alias=True, exclude_none=True, exclude={"hyperparameter_search"})
        for path, parameter in search.parameters.items():
            for value in _search_points(parameter):
                trial = SEARCH_PATHS.apply_parameters(base, {path: value})
                try:
                    checked = FineTuneJobSpec.model_validate(trial)
                except ValidationError as exc:
                    field, message = _describe(exc.errors(include_url=False)[0])
                    raise _FieldRuleError(
                        f"hyperparameterSearch.parameters.{path}",
                        f"value {_shorten(value)} gives an invalid job: spec.{field}: {message}",
                    ) from None
                if checked.hyperparameters.eval_strategy == "no":
                    raise _FieldRuleError(
                        f"hyperparameterSearch.parameters.{path}",
                        f"value {_shorten(value)} turns evaluation off, and the objective "
                        f"{search.objective.metric} needs it",
                    )

    @property
    def total_gpus(self) -> int:
        return self.resources.nodes * self.resources.gpus_per_node


# The fields a hyperparameterSearch may set: search.paths walks this model for them (it takes the model as an
# argument, so it need not import this module). The validators above use it too; they only run once this
# module is loaded, so the name exists by then.
SEARCH_PATHS = SearchablePaths(FineTuneJobSpec)


class InvalidSpec(ValueError):
    """A spec the operator refuses; `field` is the dotted camelCase path, `message` says how to fix it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"spec.{field}: {message}" if field else f"spec: {message}")
        self.field = field
        self.message = message


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    loc = [str(part) for part in error["loc"]]
    rule = error.get("ctx", {}).get("error")
    if isinstance(rule, _FieldRuleError) and rule.field:
        loc.append(rule.field)
    path = ".".join(loc)
    given = error.get("input")
    kind = error["type"]
    if kind == "missing":
        return path, "is required"
    if kind == "extra_forbidden":
        return path, "is not a known field (check its spelling and nesting)"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return path, f"must be one of {expected}; got {_shorten(given)}"
    if kind == "string_pattern_mismatch":
        return path, f"{_shorten(given)} is not valid here; {_pattern_hint(path)}"
    message = error["msg"].removeprefix("Value error, ")
    if given is not None and not isinstance(given, dict | list) and kind != "value_error":
        return path, f"{message}; got {_shorten(given)}"
    return path, message


def _shorten(value: Any) -> str:
    # Error messages end up in events and status: never echo a megabyte back.
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _count_values(value: Any, budget: int) -> int:
    """How many JSON values `value` holds, counting shared (YAML-aliased) subtrees every time they occur,
    stopping once `budget` is exceeded."""
    count, stack = 0, [value]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _pattern_hint(path: str) -> str:
    if path.startswith("model.source"):
        return "use hf://org/name, pvc://claim/path, s3://bucket/prefix or file:///path"
    if path.startswith("output.uri"):
        return "use pvc://claim/path, s3://bucket/prefix or file:///path"
    if path.startswith("dataset."):
        return "use pvc://claim/path/file.csv, s3://bucket/key, hf://org/dataset or file:///path"
    if path.endswith(("cpu", "memory")):
        return "use a Kubernetes quantity such as 8, 500m or 32Gi"
    if path.endswith(("queueName", "name")):
        return "use a DNS label: lowercase letters, digits and '-', e.g. team-a-queue"
    return "see the CRD schema (kubectl explain finetunejob.spec) for the accepted form"


def parse_spec(spec: dict[str, Any] | None, name: str = "") -> FineTuneJobSpec:
    """Parse and check a FineTuneJob spec; raise InvalidSpec naming the first bad field."""
    if name:
        check_name(name, search=isinstance(spec, dict) and spec.get("hyperparameterSearch") is not None)
    if _count_values(spec, MAX_SPEC_VALUES) > MAX_SPEC_VALUES:
        raise InvalidSpec("", f"is too large: more than {MAX_SPEC_VALUES} values (YAML aliases count every time)")
    try:
        return FineTuneJobSpec.model_validate(spec or {})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field, message = _describe(first)
        raise InvalidSpec(field, message) from None


def check_name(name: str, *, search: bool = False) -> None:
    """Refuse a metadata.name the operator cannot derive child names from; `search`: the job runs a
    hyperparameter search, whose trials append "-t<index>" to the name."""
    # Service names are DNS-1035 labels (start with a letter), and pod hostnames add a suffix.
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > MAX_NAME_LENGTH:
        raise InvalidSpec(
            "",
            f"metadata.name {name!r} must start with a letter, contain only lowercase letters, digits "
            f"and '-', and be at most {MAX_NAME_LENGTH} characters (e.g. sentiment-minilm), because the "
            "operator derives Service and pod hostnames from it",
        )
    if search and len(name) > MAX_SEARCH_NAME_LENGTH:
        raise InvalidSpec(
            "",
            f"metadata.name {name!r} is {len(name)} characters; with hyperparameterSearch it may be at most "
            f"{MAX_SEARCH_NAME_LENGTH}, because trials run as jobs named <name>-t<index> (up to -t"
            f"{MAX_SEARCH_TRIALS - 1}) and each must fit {MAX_NAME_LENGTH} characters",
        )


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves that differ between two JSON values (pure)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [path for key in keys for path in changed_paths(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]
