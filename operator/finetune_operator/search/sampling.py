"""The next trial's parameters: an Optuna study rebuilt from status.trials on every call (pure, no I/O).

The operator keeps no state between reconciles, so nothing Optuna holds may outlive one call: each
call replays the recorded trials into an in-memory study and asks it once, with samplers seeded from
the search seed and the trial index so the same status always yields the same suggestion.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

from .space import (
    ALGORITHMS,
    GOALS,
    PARAMETERS_FIELD,
    Param,
    all_points,
    finite_size,
    grid_points,
    grid_size,
    point_key,
    space_from_search,
)

# What plan.py and the tests read here; the space lives in space.py, the Optuna study in optuna_study.py.
__all__ = [
    "ALGORITHMS",
    "GOALS",
    "PARAMETERS_FIELD",
    "Param",
    "grid_points",
    "grid_size",
    "space_from_search",
    "suggest",
]

# Retries with derived seeds when a sampler proposes an already tried point; small finite spaces
# that keep colliding fall back to picking an unvisited point directly.
MAX_DUPLICATE_RETRIES = 16
# Finite spaces up to this size are enumerated to find unvisited points; larger ones practically
# never collide.
MAX_ENUMERATED_POINTS = 100_000


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
    # Late on purpose (tests/operator/test_operator_import_structure.py): Optuna loads with the first search.
    from . import optuna_study

    dists = optuna_study.distributions(space)
    taken = {point_key(space, trial.get("parameters") or {}) for trial in trials}
    if algorithm == "grid":
        return optuna_study.suggest_grid(space, dists, trials, taken, goal=goal, seed=seed)

    size = finite_size(space)
    unvisited: list[dict[str, Any]] | None = None
    if size is not None and size <= MAX_ENUMERATED_POINTS:
        unvisited = [point for point in all_points(space) if point_key(space, point) not in taken]
    params: dict[str, Any] = {}
    for attempt in range(MAX_DUPLICATE_RETRIES):
        sampler = optuna_study.sampler_for(algorithm, _derived_seed(seed, index, attempt), max_trials)
        params = optuna_study.ask(sampler, goal, space, dists, trials)
        if point_key(space, params) not in taken or unvisited == []:
            return params  # new, or every point was tried already so a repeat cannot be avoided
    if unvisited:
        return random.Random(_derived_seed(seed, index, MAX_DUPLICATE_RETRIES)).choice(unvisited)
    return params


def _derived_seed(seed: int, index: int, attempt: int) -> int:
    digest = hashlib.sha256(f"{seed}/{index}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
