"""Search suggestions: the space from the spec, grids, and real Optuna studies rebuilt from status.trials."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import warnings
from types import SimpleNamespace

import optuna
import pytest
from finetune_operator.search.optuna_study import distributions, grid_order, grid_search_space
from finetune_operator.search.sampling import (
    Param,
    grid_points,
    grid_size,
    space_from_search,
    suggest,
)
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

KINDS = {
    "learningRate": "float",
    "batchSize": "int",
    "method.lora.r": "int",
    "regularization.dropout": "float",
    "method.type": "categorical",
    "epochs": "int",
}


def parameter(min=None, max=None, scale="linear", step=None, values=None):  # noqa: A002 (spec field names)
    return SimpleNamespace(min=min, max=max, scale=scale, step=step, values=values)


def search(**parameters):
    return SimpleNamespace(parameters=parameters)


def run_trials(algorithm, space, count, objective, *, goal="minimize", seed=3, max_trials=None):
    """Suggest, record and complete `count` trials one by one, as the operator would across reconciles."""
    trials = []
    for index in range(count):
        params = suggest(algorithm, space, trials, goal=goal, seed=seed, index=index, max_trials=max_trials or count)
        if params is None:
            break
        trials.append({"index": index, "parameters": params, "state": "Succeeded", "objectiveValue": objective(params)})
    return trials


def key(params):
    return tuple(sorted((name, (type(value) is bool, value)) for name, value in params.items()))


# --- the space ---------------------------------------------------------------------------------------


def test_space_keeps_the_paths_as_written_and_types_ranges_by_field_kind():
    space = space_from_search(
        search(
            **{
                "learningRate": parameter(min=1e-5, max=1e-3, scale="log"),
                "method.lora.r": parameter(min=4, max=16.0, step=4),
                "batchSize": parameter(values=[8, 16, 32]),
                "regularization.dropout": parameter(min=0, max=0.3, step=0.1),
            }
        ),
        KINDS.__getitem__,
    )
    assert list(space) == ["learningRate", "method.lora.r", "batchSize", "regularization.dropout"]
    assert space["learningRate"] == Param("learningRate", "float", 1e-5, 1e-3, log=True)
    r = space["method.lora.r"]
    assert (r.kind, r.low, r.high, r.step) == ("int", 4, 16, 4)
    assert all(type(v) is int for v in (r.low, r.high, r.step))
    # values make a parameter categorical even on an int field
    assert space["batchSize"] == Param("batchSize", "categorical", values=(8, 16, 32))
    dropout = space["regularization.dropout"]
    assert type(dropout.low) is float and dropout.step == 0.1


@pytest.mark.parametrize(
    ("name", "given", "complaint"),
    [
        ("method.type", parameter(min=0, max=1), "a categorical field is searched over values"),
        ("epochs", parameter(min=1.5, max=4), "whole-number"),
        ("epochs", parameter(min=1, max=4, step=0.5), "whole-number"),
        ("learningRate", parameter(min=1e-3, max=1e-3), "must be below max"),
        ("learningRate", parameter(min=0.0, max=1e-3, scale="log"), "scale: log needs min > 0"),
        ("learningRate", parameter(min=1e-5), "both min and max"),
    ],
)
def test_bad_ranges_are_refused_naming_the_parameter(name, given, complaint):
    with pytest.raises(ValueError, match=complaint) as error:
        space_from_search(search(**{name: given}), KINDS.__getitem__)
    assert f"spec.hyperparameterSearch.parameters.{name}:" in str(error.value)


def test_distributions_carry_log_and_step_and_end_stepped_ranges_on_a_reachable_point():
    space = {
        "lr": Param("lr", "float", 1e-5, 1e-3, log=True),
        "r": Param("r", "int", 1, 10, step=4),
        "d": Param("d", "float", 0.0, 0.35, step=0.1),
        "n": Param("n", "int", 1, 8),
        "c": Param("c", "categorical", values=("a", True, 3)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when it has to move `high` itself
        dists = distributions(space)
    assert dists == {
        "lr": FloatDistribution(1e-5, 1e-3, log=True),
        "r": IntDistribution(1, 9, step=4),
        "d": FloatDistribution(0.0, 0.3, step=0.1),
        "n": IntDistribution(1, 8),
        "c": CategoricalDistribution(("a", True, 3)),
    }


# --- grids -------------------------------------------------------------------------------------------


def test_grid_points_step_in_decimal_and_include_max_when_reachable():
    space = {"d": Param("d", "float", 0.0, 0.3, step=0.1), "r": Param("r", "int", 4, 14, step=4)}
    assert [p["d"] for p in grid_points({"d": space["d"]})] == [0.0, 0.1, 0.2, 0.3]
    assert [p["r"] for p in grid_points({"r": space["r"]})] == [4, 8, 12]
    small = {"lr": Param("lr", "float", 1e-5, 5e-5, step=1e-5)}
    assert [p["lr"] for p in grid_points(small)] == [1e-5, 2e-5, 3e-5, 4e-5, 5e-5]
    assert grid_points(space)[:2] == [{"d": 0.0, "r": 4}, {"d": 0.0, "r": 8}]
    assert grid_size(space) == len(grid_points(space)) == 12


def test_grid_size_counts_without_listing():
    space = {"n": Param("n", "int", 0, 10**9, step=1), "c": Param("c", "categorical", values=(1, 2))}
    assert grid_size(space) == 2 * (10**9 + 1)


def test_a_range_without_step_is_not_a_grid():
    space = {"lr": Param("lr", "float", 1e-5, 1e-3)}
    with pytest.raises(ValueError, match=r"parameters\.lr: algorithm: grid needs values or a step"):
        grid_size(space)
    with pytest.raises(ValueError, match=r"parameters\.lr"):
        suggest("grid", space, [], goal="minimize", seed=1, index=0, max_trials=3)


GRID = {
    "c": Param("c", "categorical", values=("x", True, 1)),
    "d": Param("d", "float", 0.0, 0.3, step=0.1),
    "b": Param("b", "int", 2, 6, step=2),
}


def test_grid_follows_grid_samplers_own_order_and_visits_every_point_once_then_stops():
    seed = 11
    # Optuna's own order: one study that lives through the whole grid.
    study = optuna.create_study(
        sampler=optuna.samplers.GridSampler(
            {name: [p[name] for p in grid_points({name: param})] for name, param in GRID.items()}, seed=seed
        )
    )
    native = []
    for index in range(grid_size(GRID)):
        trial = study.ask(distributions(GRID))
        native.append(trial.params)
        if index < grid_size(GRID) - 1:  # telling the last point makes GridSampler call study.stop(), which raises
            study.tell(trial, 0.0)

    # Ours: a fresh study rebuilt from the recorded trials on every call, states mixed.
    trials, states = [], ["Running", "Succeeded", "Failed", "EarlyStopped", "Pending"]
    for index in range(grid_size(GRID)):
        params = suggest("grid", GRID, trials, goal="maximize", seed=seed, index=index, max_trials=100)
        assert params == native[index]
        trials.append(
            {
                "index": index,
                "parameters": params,
                "state": states[index % len(states)],
                "objectiveValue": float(index),
                "history": [{"step": 1, "value": 0.5}],
            }
        )
    assert len({key(t["parameters"]) for t in trials}) == grid_size(GRID) == 36
    assert {key(p) for p in grid_points(GRID)} == {key(t["parameters"]) for t in trials}
    assert suggest("grid", GRID, trials, goal="maximize", seed=seed, index=36, max_trials=100) is None


def test_grid_avoids_points_recorded_in_another_order():
    # Trials recorded under another seed collide with this seed's order; no point may repeat.
    trials = run_trials("grid", GRID, 10, lambda p: 0.0, seed=1)
    for index in range(10, 36):
        params = suggest("grid", GRID, trials, goal="minimize", seed=2, index=index, max_trials=100)
        trials.append({"index": index, "parameters": params, "state": "Running"})
    assert len({key(t["parameters"]) for t in trials}) == 36
    assert suggest("grid", GRID, trials, goal="minimize", seed=2, index=36, max_trials=100) is None


# --- random and bayesian -----------------------------------------------------------------------------

MIXED = {
    "lr": Param("lr", "float", 1e-5, 1e-3, log=True),
    "r": Param("r", "int", 4, 64, step=4),
    "d": Param("d", "float", 0.0, 0.7, step=0.1),
    "bs": Param("bs", "categorical", values=(8, "auto", True, 2.5)),
}


@pytest.mark.parametrize("algorithm", ["grid", "random", "bayesian"])
def test_the_same_trials_give_the_same_suggestion_after_a_restart(algorithm):
    space = MIXED if algorithm != "grid" else GRID
    trials = run_trials(algorithm, space, 8, lambda p: float(len(str(p))), max_trials=12)
    trials[-1]["state"] = "Running"
    trials[-2]["state"] = "EarlyStopped"
    trials[-2]["history"] = [{"step": 10, "value": 3.0}, {"step": 20, "value": 2.5}]
    trials[-3]["state"] = "Failed"
    first = suggest(algorithm, space, trials, goal="minimize", seed=5, index=8, max_trials=12)
    again = suggest(algorithm, space, [dict(t) for t in trials], goal="minimize", seed=5, index=8, max_trials=12)
    assert first == again
    assert key(first) not in {key(t["parameters"]) for t in trials}


@pytest.mark.parametrize("algorithm", ["random", "bayesian"])
def test_other_indexes_and_seeds_give_other_suggestions(algorithm):
    space = {"lr": MIXED["lr"]}
    base = suggest(algorithm, space, [], goal="minimize", seed=5, index=0, max_trials=10)
    assert suggest(algorithm, space, [], goal="minimize", seed=5, index=1, max_trials=10) != base
    assert suggest(algorithm, space, [], goal="minimize", seed=6, index=0, max_trials=10) != base


@pytest.mark.parametrize("algorithm", ["random", "bayesian"])
def test_a_small_space_is_covered_without_repeats_before_any_point_repeats(algorithm):
    space = {"c": Param("c", "categorical", values=("a", "b", "c")), "n": Param("n", "int", 1, 2)}
    trials = []
    for index in range(6):
        params = suggest(algorithm, space, trials, goal="minimize", seed=0, index=index, max_trials=8)
        # Pending trials count as taken: the operator records them before their Job runs.
        trials.append({"index": index, "parameters": params, "state": "Pending"})
    assert len({key(t["parameters"]) for t in trials}) == 6
    seventh = suggest(algorithm, space, trials, goal="minimize", seed=0, index=6, max_trials=8)
    assert key(seventh) in {key(t["parameters"]) for t in trials}  # full: a repeat is the only choice


def test_values_come_back_typed_on_their_steps_and_log_spread():
    trials = run_trials("random", MIXED, 60, lambda p: 0.0)
    params = [t["parameters"] for t in trials]
    assert all(type(p["r"]) is int and 4 <= p["r"] <= 64 and p["r"] % 4 == 0 for p in params)
    # Exact decimals: Optuna itself computes 6 * 0.1 = 0.6000000000000001.
    assert {p["d"] for p in params} == {0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7}
    assert all(1e-5 <= p["lr"] <= 1e-3 for p in params)
    # Log-uniform puts half the draws below the geometric middle (1e-4); linear would put ~9% there.
    assert 15 <= sum(p["lr"] < 1e-4 for p in params) <= 45
    seen = {(type(p["bs"]), p["bs"]) for p in params}
    assert seen == {(int, 8), (str, "auto"), (bool, True), (float, 2.5)}


def test_bayesian_beats_random_on_a_quadratic():
    space = {"x": Param("x", "float", -10.0, 10.0)}

    def objective(p):
        return (p["x"] - 3.0) ** 2

    def best(trials):
        return min(t["objectiveValue"] for t in trials)

    def late_distance(trials):  # how close the model-driven half of the search stays to the optimum
        return statistics.median(abs(t["parameters"]["x"] - 3.0) for t in trials[10:])

    tpe = [run_trials("bayesian", space, 20, objective, seed=seed) for seed in range(5)]
    rnd = [run_trials("random", space, 20, objective, seed=seed) for seed in range(5)]
    assert statistics.median(map(best, tpe)) < statistics.median(map(best, rnd)) / 10
    assert max(map(late_distance, tpe)) < min(map(late_distance, rnd))


def test_bayesian_maximizes_when_asked():
    space = {"x": Param("x", "float", -10.0, 10.0)}
    trials = run_trials("bayesian", space, 20, lambda p: -abs(p["x"] + 4.0), goal="maximize")
    late = [t["parameters"]["x"] for t in trials[10:]]
    assert statistics.median(abs(x + 4.0) for x in late) < 2.5  # uniform draws would sit ~5 away


def test_trials_outside_the_space_and_unscored_successes_are_tolerated():
    space = {"lr": MIXED["lr"], "bs": MIXED["bs"]}
    trials = [
        {"index": 0, "parameters": {"lr": 5.0, "bs": 8}, "state": "Succeeded", "objectiveValue": 1.0},
        {"index": 1, "parameters": {"lr": 1e-4}, "state": "Failed"},
        {"index": 2, "parameters": {"lr": 1e-4, "bs": "nope"}, "state": "Running"},
        {"index": 3, "parameters": {"lr": 1e-4, "bs": 8}, "state": "Succeeded"},
        {"index": 4, "parameters": {"lr": 2e-4, "bs": 8}, "state": "Succeeded", "objectiveValue": math.inf},
    ]
    params = suggest("bayesian", space, trials, goal="minimize", seed=1, index=5, max_trials=10)
    assert 1e-5 <= params["lr"] <= 1e-3 and params["bs"] in (8, "auto", True, 2.5)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"algorithm": "hyperband"}, "algorithm: 'hyperband' is not one of grid, random, bayesian"),
        ({"goal": "max"}, "goal: 'max' is not minimize or maximize"),
        (
            {"trials": [{"index": 0, "parameters": {"n": 1}, "state": "Lost"}]},
            r"trials\[0\].state: unknown state 'Lost'",
        ),
    ],
)
def test_bad_inputs_are_refused_naming_the_field(change, complaint):
    arguments = {
        "algorithm": "random",
        "space": {"n": Param("n", "int", 1, 5)},
        "trials": [],
        "goal": "minimize",
        "seed": 1,
        "index": 0,
        "max_trials": 3,
    } | change
    with pytest.raises(ValueError, match=complaint):
        suggest(arguments.pop("algorithm"), arguments.pop("space"), arguments.pop("trials"), **arguments)


def test_grid_ids_of_rebuilt_trials_match_grid_samplers_shuffle():
    # Rebuilt trials carry GridSampler's `grid_id`; it must index the sampler's own shuffled grid.
    # This reads a private attribute on purpose: it pins the assumption for Optuna upgrades.
    grid_space = grid_search_space(GRID)
    for seed in (0, 1, 11, 2**31 - 1):
        sampler = optuna.samplers.GridSampler(grid_space, seed=seed)
        assert [tuple(point.values()) for point in grid_order(grid_space, seed)] == sampler._all_grids


def test_grid_past_its_size_in_trial_numbers_still_visits_each_point_once():
    # Trials from an older spec sit outside today's space, so later trials get numbers past the grid
    # size; GridSampler then picks among the unvisited ids the rebuilt trials' grid ids leave.
    trials = [{"index": i, "parameters": {"c": "old", "d": 9.0, "b": 0}, "state": "Failed"} for i in range(40)]
    for index in range(40, 76):
        params = suggest("grid", GRID, trials, goal="minimize", seed=4, index=index, max_trials=100)
        trials.append({"index": index, "parameters": params, "state": "Succeeded", "objectiveValue": 1.0})
    assert len({key(t["parameters"]) for t in trials[40:]}) == 36
    assert suggest("grid", GRID, trials, goal="minimize", seed=4, index=76, max_trials=100) is None


def test_bayesian_spreads_parallel_trials_instead_of_piling_onto_the_best_region():
    # Running/Pending trials are replayed as RUNNING so TPE's constant liar treats them as bad
    # results; replayed as failures, 8 parallel asks land within ~0.5 of each other.
    space = {"x": Param("x", "float", -10.0, 10.0)}
    for seed in range(3):
        trials = run_trials("bayesian", space, 10, lambda p: (p["x"] - 3.0) ** 2, seed=seed, max_trials=30)
        parallel = []
        for index in range(10, 18):
            params = suggest("bayesian", space, trials, goal="minimize", seed=seed, index=index, max_trials=30)
            trials.append({"index": index, "parameters": params, "state": "Running" if index % 2 else "Pending"})
            parallel.append(params["x"])
        assert statistics.pstdev(parallel) > 2.0


def test_the_operator_loads_optuna_only_when_a_search_asks_for_parameters():
    # About 25 MiB of resident memory (docs/scaling.md): reading specs and sizing grids must not pay it.
    script = (
        "import sys\n"
        "import finetune_operator.handlers\n"
        "from finetune_operator.search.sampling import Param, grid_size, suggest\n"
        "assert grid_size({'a': Param('a', 'categorical', values=(1, 2))}) == 2\n"
        "assert 'optuna' not in sys.modules and 'numpy' not in sys.modules, 'loaded at import'\n"
        "suggest('random', {'a': Param('a', 'float', 0.0, 1.0)}, [], goal='minimize', seed=1, index=0, max_trials=2)\n"
        "assert 'optuna' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
