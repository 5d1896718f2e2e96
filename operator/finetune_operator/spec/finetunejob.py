"""The FineTuneJob spec as a typed model, and `parse_spec`, the one way in.

The model mirrors the CRD's openAPIV3Schema (manifests/crd/finetunejobs.yaml) field for field, and adds the
checks a schema cannot express (child-name lengths, for one). The operator parses every spec through
`parse_spec` before it creates anything: a spec that fails here never gets pods, and the error names
the field, what was given and a valid example.

Its parts, beside it in spec/: schema.py (enums, patterns and bounds the CRD repeats; the models' base),
sections.py (one model per section), hyperparameter_search.py (the hyperparameterSearch section), core_v1.py
(the core/v1 types passed through to the pods, refused as the Job API would), errors.py (how a refusal is
worded), diff.py (which fields an update changed).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, ValidationError, model_validator

from ..search.paths import SearchablePaths
from .errors import FieldRuleError, InvalidSpec, describe, shorten
from .hyperparameter_search import HyperparameterSearch, check_parameters, search_points
from .schema import (
    IMAGE_PATTERN,
    MAX_NAME_LENGTH,
    MAX_SEARCH_NAME_LENGTH,
    MAX_SEARCH_TRIALS,
    SpecModel,
    Task,
)
from .sections import (
    Dataset,
    EnvVar,
    Hyperparameters,
    Method,
    ModelSource,
    Output,
    Regularization,
    Resources,
    RunPolicy,
    Scheduling,
    Secrets,
)

# A spec beyond this many JSON values is abuse (e.g. a YAML alias bomb), not a training job.
MAX_SPEC_VALUES = 100_000


class FineTuneJobSpec(SpecModel):
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
        if self.hyperparameter_search is not None:
            # The search's parameters name fields of this model: checked here, first, as the section's own rules.
            check_parameters(self.hyperparameter_search, SEARCH_PATHS)
        fmt = self.dataset.format
        if fmt == "imagefolder" and self.task != "image-classification":
            raise FieldRuleError(
                "dataset.format",
                f"dataset.format imagefolder needs task: image-classification (task is {self.task!r})",
            )
        if fmt == "audiofolder" and self.task not in ("audio-classification", "speech-recognition"):
            raise FieldRuleError(
                "dataset.format",
                f"dataset.format audiofolder needs task: audio-classification or speech-recognition "
                f"(task is {self.task!r})",
            )
        early = self.regularization.early_stopping
        has_eval = self.dataset.validation is not None or self.dataset.validation_split is not None
        if early is not None and not has_eval:
            raise FieldRuleError(
                "regularization.earlyStopping",
                "regularization.earlyStopping needs an evaluation set: set dataset.validation "
                "or dataset.validationSplit (e.g. validationSplit: 0.1)",
            )
        if early is not None and self.hyperparameters.eval_strategy == "no":
            raise FieldRuleError(
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
            raise FieldRuleError(
                "hyperparameterSearch.objective",
                f"the objective {metric} is measured on an evaluation set: set dataset.validation "
                "or dataset.validationSplit (e.g. validationSplit: 0.1)",
            )
        if self.hyperparameters.eval_strategy == "no":
            raise FieldRuleError(
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
            for value in search_points(parameter):
                trial = SEARCH_PATHS.apply_parameters(base, {path: value})
                try:
                    checked = FineTuneJobSpec.model_validate(trial)
                except ValidationError as exc:
                    field, message = describe(exc.errors(include_url=False)[0])
                    raise FieldRuleError(
                        f"hyperparameterSearch.parameters.{path}",
                        f"value {shorten(value)} gives an invalid job: spec.{field}: {message}",
                    ) from None
                if checked.hyperparameters.eval_strategy == "no":
                    raise FieldRuleError(
                        f"hyperparameterSearch.parameters.{path}",
                        f"value {shorten(value)} turns evaluation off, and the objective "
                        f"{search.objective.metric} needs it",
                    )

    @property
    def total_gpus(self) -> int:
        return self.resources.nodes * self.resources.gpus_per_node


# The fields a hyperparameterSearch may set: search.paths walks this model for them (it takes the model as an
# argument, so it need not import this module). The validators above use it too; they only run once this
# module is loaded, so the name exists by then.
SEARCH_PATHS = SearchablePaths(FineTuneJobSpec)


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
        field, message = describe(first)
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
