"""The next trial's parameters: an Optuna study rebuilt from status.trials on every call (pure, no I/O).

The operator keeps no state between reconciles, so nothing Optuna holds may outlive one call: each
call replays the recorded trials into an in-memory study and asks it once, with samplers seeded from
the search seed and the trial index so the same status always yields the same suggestion.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState, create_trial

# A throwaway study per reconcile would log "A new study created in memory" every few seconds.
optuna.logging.set_verbosity(optuna.logging.WARNING)

ALGORITHMS = ("grid", "random", "bayesian")
GOALS = ("minimize", "maximize")
PARAMETERS_FIELD = "spec.hyperparameterSearch.parameters"
# Retries with derived seeds when a sampler proposes an already tried point; small finite spaces
# that keep colliding fall back to picking an unvisited point directly.
MAX_DUPLICATE_RETRIES = 16
# Finite spaces up to this size are enumerated to find unvisited points; larger ones practically
# never collide.
MAX_ENUMERATED_POINTS = 100_000


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


def distributions(space: Mapping[str, Param]) -> dict[str, BaseDistribution]:
    """Optuna distributions of the space, in the space's order."""
    return {name: _distribution(param) for name, param in space.items()}


def _distribution(param: Param) -> BaseDistribution:
    if param.kind == "categorical":
        return CategoricalDistribution(param.values)
    # A stepped range ends at its last reachable point; passing that avoids Optuna's warning
    # about adjusting `high`.
    stepped = _stepped_values(param) if param.step is not None else None
    high = stepped[-1] if stepped else param.high
    if param.kind == "int":
        return IntDistribution(param.low, high, log=param.log, step=param.step or 1)
    return FloatDistribution(param.low, high, log=param.log, step=param.step)


def _stepped_values(param: Param) -> list[Any]:
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


def _grid_values(param: Param) -> list[Any]:
    if param.kind == "categorical":
        return list(param.values)
    if param.step is None:
        raise ValueError(
            f"{PARAMETERS_FIELD}.{param.name}: algorithm: grid needs values or a step for this range "
            f"(e.g. step: {(param.high - param.low) / 4:g})"
        )
    return _stepped_values(param)


def grid_points(space: Mapping[str, Param]) -> list[dict[str, Any]]:
    """Every point of a finite space, the last parameter varying fastest."""
    names = list(space)
    axes = [_grid_values(space[name]) for name in names]
    return [dict(zip(names, point)) for point in itertools.product(*axes)]


def grid_size(space: Mapping[str, Param]) -> int:
    """How many points grid_points would give, without listing them."""
    size = 1
    for param in space.values():
        if param.kind == "categorical":
            size *= len(param.values)
        elif param.step is None:
            _grid_values(param)  # raises the error that names the parameter
        else:
            size *= _stepped_count(param)
    return size


def _finite_size(space: Mapping[str, Param]) -> int | None:
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


def _all_points(space: Mapping[str, Param]) -> list[dict[str, Any]]:
    names = list(space)
    axes = []
    for name in names:
        param = space[name]
        if param.kind == "int" and param.step is None:
            param = _with_step(param, 1)
        axes.append(_grid_values(param))
    return [dict(zip(names, point)) for point in itertools.product(*axes)]


def suggest(
    algorithm: str,
    space: Mapping[str, Param],
    trials: list[dict],
    *,
    goal: str,
    seed: int,
    index: int,
    max_trials: int,
) -> dict[str, Any] | None:
    """The parameters of trial number `index`, or None when a grid has no untried point left.

    trials are status.trials entries (parameters, state, objectiveValue, history, index). The result
    is keyed like the space; int parameters are ints, categorical values keep their JSON type.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"spec.hyperparameterSearch.algorithm: {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    if goal not in GOALS:
        raise ValueError(f"spec.hyperparameterSearch.objective.goal: {goal!r} is not minimize or maximize")
    dists = distributions(space)
    taken = {_point_key(space, trial.get("parameters") or {}) for trial in trials}
    if algorithm == "grid":
        return _suggest_grid(space, dists, trials, taken, goal=goal, seed=seed)

    size = _finite_size(space)
    unvisited: list[dict[str, Any]] | None = None
    if size is not None and size <= MAX_ENUMERATED_POINTS:
        unvisited = [point for point in _all_points(space) if _point_key(space, point) not in taken]
    params: dict[str, Any] = {}
    for attempt in range(MAX_DUPLICATE_RETRIES):
        sampler = _sampler(algorithm, _derived_seed(seed, index, attempt), max_trials)
        params = _ask(sampler, goal, space, dists, trials)
        if _point_key(space, params) not in taken or unvisited == []:
            return params  # new, or every point was tried already so a repeat cannot be avoided
    if unvisited:
        return random.Random(_derived_seed(seed, index, MAX_DUPLICATE_RETRIES)).choice(unvisited)
    return params


def _suggest_grid(
    space: Mapping[str, Param],
    dists: dict[str, BaseDistribution],
    trials: list[dict],
    taken: set[tuple],
    *,
    goal: str,
    seed: int,
) -> dict[str, Any] | None:
    grid_space = _grid_search_space(space)
    order = _grid_order(grid_space, seed)
    unvisited = [gid for gid, point in enumerate(order) if _point_key(space, point) not in taken]
    if not unvisited:
        return None
    grid_ids = {_point_key(space, point): gid for gid, point in enumerate(order)}
    sampler = optuna.samplers.GridSampler(grid_space, seed=seed)
    params = _ask(sampler, goal, space, dists, trials, grid=(grid_space, grid_ids))
    if _point_key(space, params) in taken:
        # GridSampler takes grid id == trial number while numbers are below the grid size; that
        # repeats a point only if the recorded trials came from another seed or order. Take the
        # first untried point in the sampler's own order instead.
        return dict(order[unvisited[0]])
    return params


def _grid_search_space(space: Mapping[str, Param]) -> dict[str, list[Any]]:
    # GridSampler stores its space with sorted names; the `search_space` attribute of rebuilt trials
    # must compare equal to it or the sampler ignores them.
    return {name: _grid_values(space[name]) for name in sorted(space)}


def _grid_order(grid_space: dict[str, list[Any]], seed: int) -> list[dict[str, Any]]:
    """The points in GridSampler's grid-id order: the product over sorted names, shuffled by its seed."""
    names = sorted(grid_space)
    points = list(itertools.product(*(grid_space[name] for name in names)))
    # The same call GridSampler makes (LazyRandomState(seed or 0).rng.shuffle(...)); a test pins it.
    np.random.RandomState(seed or 0).shuffle(points)
    return [dict(zip(names, point)) for point in points]


def _sampler(algorithm: str, seed: int, max_trials: int) -> optuna.samplers.BaseSampler:
    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # TPE models the objective only after n_startup_trials random ones. Optuna's default of 10
    # assumes long studies; searches here have 1..100 trials, often about 10, so a third of the
    # budget (2..10) explores at random: at least 2 so the model can split good from bad.
    # constant_liar keeps parallel trials apart by treating running ones as bad results.
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=max(2, min(10, max_trials // 3)),
        multivariate=True,
        constant_liar=True,
    )


def _derived_seed(seed: int, index: int, attempt: int) -> int:
    digest = hashlib.sha256(f"{seed}/{index}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _ask(
    sampler: optuna.samplers.BaseSampler,
    goal: str,
    space: Mapping[str, Param],
    dists: dict[str, BaseDistribution],
    trials: list[dict],
    grid: tuple[dict[str, list[Any]], dict[tuple, int]] | None = None,
) -> dict[str, Any]:
    study = optuna.create_study(direction=goal, sampler=sampler)
    for trial in sorted(trials, key=lambda t: t["index"]):
        study.add_trial(_frozen_trial(trial, space, dists, grid))
    asked = study.ask(dists)
    return {name: _clean(space[name], asked.params[name]) for name in space}


_STATES = {
    "Succeeded": TrialState.COMPLETE,
    "EarlyStopped": TrialState.PRUNED,
    "Failed": TrialState.FAIL,
    "Pending": TrialState.RUNNING,  # RUNNING so TPE's constant liar and GridSampler avoid its point
    "Running": TrialState.RUNNING,
}


def _frozen_trial(
    trial: dict,
    space: Mapping[str, Param],
    dists: dict[str, BaseDistribution],
    grid: tuple[dict[str, list[Any]], dict[tuple, int]] | None,
) -> FrozenTrial:
    state = trial.get("state")
    if state not in _STATES:
        raise ValueError(f"status.trials[{trial.get('index')}].state: unknown state {state!r}")
    optuna_state = _STATES[state]
    value = trial.get("objectiveValue")
    has_value = value is not None and math.isfinite(value)
    if optuna_state == TrialState.COMPLETE and not has_value:
        optuna_state = TrialState.FAIL  # a success without an objective value teaches nothing
    params = _params_in_space(trial.get("parameters") or {}, space)
    system_attrs: dict[str, Any] = {}
    if grid is not None and params is not None:
        grid_space, grid_ids = grid
        grid_id = grid_ids.get(_point_key(space, params))
        if grid_id is not None:
            system_attrs = {"grid_id": grid_id, "search_space": grid_space}
    intermediate = None
    if optuna_state == TrialState.PRUNED:
        intermediate = {int(point["step"]): float(point["value"]) for point in trial.get("history") or []}
    try:
        return create_trial(
            state=optuna_state,
            value=float(value) if optuna_state == TrialState.COMPLETE else None,
            params=params,
            distributions=None if params is None else dists,
            system_attrs=system_attrs,
            intermediate_values=intermediate,
        )
    except ValueError:
        # Parameters outside today's space (the spec changed) tell the sampler nothing, but the
        # trial still takes its number so the next trial's number stays equal to its index.
        return create_trial(state=TrialState.FAIL)


def _params_in_space(parameters: Mapping[str, Any], space: Mapping[str, Param]) -> dict[str, Any] | None:
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


def _clean(param: Param, value: Any) -> Any:
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


def _point_key(space: Mapping[str, Param], parameters: Mapping[str, Any]) -> tuple:
    return tuple(_scalar_key(parameters.get(name)) for name in space)
