"""The Optuna side of sampling: a study rebuilt from status.trials, asked once (pure, no I/O).

Imported by sampling.suggest only when a search needs a trial's parameters: Optuna and numpy are the
biggest part of the operator's import-time memory, and a cluster that runs no search never needs them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
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

from .space import Param, clean, grid_values, params_in_space, point_key, stepped_values

# A throwaway study per reconcile would log "A new study created in memory" every few seconds.
optuna.logging.set_verbosity(optuna.logging.WARNING)


def distributions(space: Mapping[str, Param]) -> dict[str, BaseDistribution]:
    """Optuna distributions of the space, in the space's order."""
    return {name: _distribution(param) for name, param in space.items()}


def _distribution(param: Param) -> BaseDistribution:
    if param.kind == "categorical":
        return CategoricalDistribution(param.values)
    # A stepped range ends at its last reachable point; passing that avoids Optuna's warning
    # about adjusting `high`.
    stepped = stepped_values(param) if param.step is not None else None
    high = stepped[-1] if stepped else param.high
    if param.kind == "int":
        return IntDistribution(param.low, high, log=param.log, step=param.step or 1)
    return FloatDistribution(param.low, high, log=param.log, step=param.step)


def suggest_grid(
    space: Mapping[str, Param],
    dists: dict[str, BaseDistribution],
    trials: list[dict],
    taken: set[tuple],
    *,
    goal: str,
    seed: int,
) -> dict[str, Any] | None:
    grid_space = grid_search_space(space)
    order = grid_order(grid_space, seed)
    unvisited = [gid for gid, point in enumerate(order) if point_key(space, point) not in taken]
    if not unvisited:
        return None
    grid_ids = {point_key(space, point): gid for gid, point in enumerate(order)}
    sampler = optuna.samplers.GridSampler(grid_space, seed=seed)
    params = ask(sampler, goal, space, dists, trials, grid=(grid_space, grid_ids))
    if point_key(space, params) in taken:
        # GridSampler takes grid id == trial number while numbers are below the grid size; that
        # repeats a point only if the recorded trials came from another seed or order. Take the
        # first untried point in the sampler's own order instead.
        return dict(order[unvisited[0]])
    return params


def grid_search_space(space: Mapping[str, Param]) -> dict[str, list[Any]]:
    # GridSampler stores its space with sorted names; the `search_space` attribute of rebuilt trials
    # must compare equal to it or the sampler ignores them.
    return {name: grid_values(space[name]) for name in sorted(space)}


def grid_order(grid_space: dict[str, list[Any]], seed: int) -> list[dict[str, Any]]:
    """The points in GridSampler's grid-id order: the product over sorted names, shuffled by its seed."""
    names = sorted(grid_space)
    points = list(itertools.product(*(grid_space[name] for name in names)))
    # The same call GridSampler makes (LazyRandomState(seed or 0).rng.shuffle(...)); a test pins it.
    np.random.RandomState(seed or 0).shuffle(points)
    return [dict(zip(names, point)) for point in points]


def sampler_for(algorithm: str, seed: int, max_trials: int) -> optuna.samplers.BaseSampler:
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


def ask(
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
    return {name: clean(space[name], asked.params[name]) for name in space}


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
    params = params_in_space(trial.get("parameters") or {}, space)
    system_attrs: dict[str, Any] = {}
    if grid is not None and params is not None:
        grid_space, grid_ids = grid
        grid_id = grid_ids.get(point_key(space, params))
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
