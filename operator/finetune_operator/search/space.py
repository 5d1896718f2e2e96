"""A search's parameter space and its points (pure, no Optuna): what the spec asks to search over.

Kept apart from sampling's Optuna study so that reading a search's spec, sizing its grid and comparing
points import nothing heavy: the operator loads Optuna (about 25 MiB with numpy) only once a search asks
for a trial's parameters (docs/scaling.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

ALGORITHMS = ("grid", "random", "bayesian")
GOALS = ("minimize", "maximize")
PARAMETERS_FIELD = "spec.hyperparameterSearch.parameters"


@dataclass(frozen=True)
class Param:
    """One searched parameter. kind is "int", "float" or "categorical" (then only values is set)."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    values: tuple = ()


def space_from_search(search: Any, kind_of: Callable[[str], str]) -> dict[str, Param]:
    """The search space of a spec.hyperparameter_search.HyperparameterSearch, keyed by the parameter paths as written.

    kind_of(path) gives the field's kind ("int" | "float" | "categorical"); a parameter given
    `values` is categorical whatever its field's type.
    """
    space: dict[str, Param] = {}
    for name, parameter in search.parameters.items():
        values = getattr(parameter, "values", None)
        if values:
            space[name] = Param(name=name, kind="categorical", values=tuple(values))
        else:
            space[name] = _range_param(name, parameter, kind_of(name))
    return space


def _range_param(name: str, parameter: Any, kind: str) -> Param:
    field = f"{PARAMETERS_FIELD}.{name}"
    low, high, step = parameter.min, parameter.max, parameter.step
    if kind not in ("int", "float"):
        raise ValueError(f"{field}: a {kind} field is searched over values (e.g. values: [a, b]), not min/max")
    if low is None or high is None:
        raise ValueError(f"{field}: give either values or both min and max (e.g. min: 1.0e-5, max: 1.0e-3)")
    if kind == "int" and any(v is not None and float(v) != int(v) for v in (low, high, step)):
        raise ValueError(f"{field}: an int field needs whole-number min/max/step, got min={low} max={high} step={step}")
    if not low < high:
        raise ValueError(f"{field}: min ({low}) must be below max ({high})")
    log = getattr(parameter, "scale", None) == "log"
    if log and low <= 0:
        raise ValueError(f"{field}: scale: log needs min > 0, got min={low}")
    cast = int if kind == "int" else float
    return Param(
        name=name,
        kind=kind,
        low=cast(low),
        high=cast(high),
        log=log,
        step=None if step is None else cast(step),
    )


def stepped_values(param: Param) -> list[Any]:
    """min, min+step, ... <= max; float points computed in decimal so 0.1*3 is 0.3, not 0.30000000000000004."""
    if param.kind == "int":
        return list(range(param.low, param.high + 1, param.step))
    low, step = Decimal(repr(param.low)), Decimal(repr(param.step))
    count = int((Decimal(repr(param.high)) - low) // step) + 1
    return [float(low + k * step) for k in range(count)]


def _stepped_count(param: Param) -> int:
    if param.kind == "int":
        return (param.high - param.low) // param.step + 1
    low, step = Decimal(repr(param.low)), Decimal(repr(param.step))
    return int((Decimal(repr(param.high)) - low) // step) + 1


def grid_values(param: Param) -> list[Any]:
    if param.kind == "categorical":
        return list(param.values)
    if param.step is None:
        raise ValueError(
            f"{PARAMETERS_FIELD}.{param.name}: algorithm: grid needs values or a step for this range "
            f"(e.g. step: {(param.high - param.low) / 4:g})"
        )
    return stepped_values(param)


def grid_points(space: Mapping[str, Param]) -> list[dict[str, Any]]:
    """Every point of a finite space, the last parameter varying fastest."""
    names = list(space)
    axes = [grid_values(space[name]) for name in names]
    return [dict(zip(names, point)) for point in itertools.product(*axes)]


def grid_size(space: Mapping[str, Param]) -> int:
    """How many points grid_points would give, without listing them."""
    size = 1
    for param in space.values():
        if param.kind == "categorical":
            size *= len(param.values)
        elif param.step is None:
            grid_values(param)  # raises the error that names the parameter
        else:
            size *= _stepped_count(param)
    return size


def finite_size(space: Mapping[str, Param]) -> int | None:
    """Number of distinct points the samplers can propose, or None for a continuous space."""
    size = 1
    for param in space.values():
        if param.kind == "categorical":
            size *= len(param.values)
        elif param.kind == "int":
            size *= _stepped_count(param if param.step is not None else _with_step(param, 1))
        elif param.step is not None:
            size *= _stepped_count(param)
        else:
            return None
    return size


def _with_step(param: Param, step: int) -> Param:
    return Param(param.name, param.kind, param.low, param.high, param.log, step, param.values)


def all_points(space: Mapping[str, Param]) -> list[dict[str, Any]]:
    names = list(space)
    axes = []
    for name in names:
        param = space[name]
        if param.kind == "int" and param.step is None:
            param = _with_step(param, 1)
        axes.append(grid_values(param))
    return [dict(zip(names, point)) for point in itertools.product(*axes)]


def params_in_space(parameters: Mapping[str, Any], space: Mapping[str, Param]) -> dict[str, Any] | None:
    """The trial's parameters typed as the space's, or None when one is missing or mistyped."""
    params = {}
    for name, param in space.items():
        if name not in parameters:
            return None
        value = parameters[name]
        if param.kind == "categorical":
            # Match by JSON type too: True == 1 in Python, but they are different choices.
            matches = [v for v in param.values if _scalar_key(v) == _scalar_key(value)]
            if not matches:
                return None
            params[name] = matches[0]
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        elif param.kind == "int":
            if not float(value).is_integer():
                return None
            params[name] = int(value)
        else:
            params[name] = float(value)
    return params


def clean(param: Param, value: Any) -> Any:
    if param.kind == "int":
        return int(value)
    if param.kind == "float":
        value = float(value)
        if param.step is not None:
            # Samplers compute low + k*step in binary floating point; report the decimal grid point.
            low, step = Decimal(repr(param.low)), Decimal(repr(param.step))
            k = round((Decimal(repr(value)) - low) / step)
            value = float(low + k * step)
        return value
    return value


def _scalar_key(value: Any) -> tuple:
    return (type(value) is bool, type(value) is str, value)


def point_key(space: Mapping[str, Param], parameters: Mapping[str, Any]) -> tuple:
    return tuple(_scalar_key(parameters.get(name)) for name in space)
