"""The hyperparameterSearch section of a FineTuneJob spec: what to optimise, how many trials, and each searched
parameter (categorical values, or a range).

A parameter names a field of the whole spec (`learningRate`, `method.lora.r`), which this section cannot
know: `check_parameters` checks the names against the spec model's searchable paths (search/paths.py), and
FineTuneJobSpec (finetunejob.py) calls it with its own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..search.paths import SearchablePaths
from .errors import FieldRuleError, shorten
from .schema import (
    INT32_MAX,
    MAX_SEARCH_PARAMETERS,
    MAX_SEARCH_TRIALS,
    MAX_SEARCH_VALUES,
    METRIC_PATTERN,
    SpecModel,
)

SearchAlgorithm = Literal["grid", "random", "bayesian"]
SearchGoal = Literal["maximize", "minimize"]
# An objective whose name contains one of these is an error measure: smaller is better.
MINIMIZED_METRIC_WORDS = ("loss", "perplexity", "wer", "cer")
# Where this section sits in the spec: check_parameters blames fields by their path from the spec.
SECTION = "hyperparameterSearch"


class SearchObjective(SpecModel):
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


class SearchEarlyStopping(SpecModel):
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


class SearchParameter(SpecModel):
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
                    raise ValueError(f"values must be numbers, strings or booleans; item {index} is {shorten(value)}")
        return values

    @model_validator(mode="after")
    def _one_form(self) -> SearchParameter:
        has_range = self.min is not None or self.max is not None
        if self.values is not None and has_range:
            raise FieldRuleError("", "give either values: [...] or a range min/max, not both")
        if self.values is None and (self.min is None or self.max is None):
            raise FieldRuleError(
                "", "give values (e.g. values: [8, 16, 32]) or both min and max (e.g. min: 1.0e-5, max: 1.0e-3)"
            )
        if self.values is not None:
            if self.step is not None or self.scale == "log":
                raise FieldRuleError("", "scale: log and step apply to a range (min/max), not to values")
            keys = [_value_key(value) for value in self.values]
            if len(set(keys)) != len(keys):
                raise FieldRuleError("", "values must be unique")
            return self
        assert self.min is not None and self.max is not None
        if not self.min < self.max:
            raise FieldRuleError("", f"min must be less than max (min {self.min}, max {self.max})")
        if self.scale == "log" and self.min <= 0:
            raise FieldRuleError("", f"scale: log needs min > 0 (min is {self.min})")
        if self.scale == "log" and self.step is not None:
            raise FieldRuleError("", "step cannot be combined with scale: log; remove one of them")
        return self

    @property
    def is_range(self) -> bool:
        return self.values is None

    @property
    def is_finite(self) -> bool:
        """Whether the parameter has a countable set of points (values, or a range with step): grid needs it."""
        return self.values is not None or self.step is not None


class HyperparameterSearch(SpecModel):
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
    # Parameter path (see SEARCH_PATHS in finetunejob.py) -> what to try; `check_parameters` checks the paths.
    parameters: dict[str, SearchParameter] = Field(min_length=1, max_length=MAX_SEARCH_PARAMETERS)

    @model_validator(mode="after")
    def _parallel_within_max(self) -> HyperparameterSearch:
        if self.parallel_trials > self.max_trials:
            raise FieldRuleError(
                "parallelTrials",
                f"parallelTrials ({self.parallel_trials}) must not exceed maxTrials ({self.max_trials})",
            )
        return self


def check_parameters(search: HyperparameterSearch, paths: SearchablePaths) -> None:
    """Each parameter names one searchable field of the spec (`paths`), no two the same, with a range only
    for a number field (whole numbers for an integer field); grid needs every parameter finite.

    FineTuneJobSpec calls this before its own rules, as if this section checked itself; FieldRuleError's
    field is the path from the spec."""
    resolved: dict[str, str] = {}
    for path, parameter in search.parameters.items():
        try:
            full = paths.resolve_path(path)
        except ValueError as exc:
            raise FieldRuleError(f"{SECTION}.parameters", str(exc)) from None
        if full in resolved:
            raise FieldRuleError(
                f"{SECTION}.parameters", f"{resolved[full]!r} and {path!r} both name {full}; keep one of them"
            )
        resolved[full] = path
        _check_parameter_kind(path, paths.parameter_kind(full), parameter)
    if search.algorithm == "grid":
        for path, parameter in search.parameters.items():
            if not parameter.is_finite:
                raise FieldRuleError(
                    f"{SECTION}.algorithm",
                    f"algorithm: grid needs every parameter finite, but {path!r} is a range without step: "
                    "give it values or a step (or use algorithm: random or bayesian)",
                )


def _check_parameter_kind(path: str, kind: str, parameter: SearchParameter) -> None:
    field = f"{SECTION}.parameters.{path}"
    if not parameter.is_range:
        return
    if kind == "categorical":
        raise FieldRuleError(field, f"{path} is not a number field: give values (e.g. values: [...]), not a range")
    if kind == "int":
        for label, bound in (("min", parameter.min), ("max", parameter.max), ("step", parameter.step)):
            if bound is not None and not float(bound).is_integer():
                raise FieldRuleError(field, f"{path} is an integer field: {label} must be a whole number, got {bound}")


def search_points(parameter: SearchParameter) -> list[SearchValue]:
    """The values the semantic check applies: every categorical value, or a range's ends."""
    if parameter.values is not None:
        return list(parameter.values)
    assert parameter.min is not None and parameter.max is not None
    return [parameter.min, parameter.max]
