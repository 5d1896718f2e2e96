"""Trial bookkeeping: objective histories, the best trial, counts by state and the default seed."""

from __future__ import annotations

import pytest
from finetune_operator.search.trials import add_history_point, best_trial, default_seed, trial_counts


def test_history_points_are_added_in_step_order_without_touching_the_input():
    original = [{"step": 10, "value": 0.5}, {"step": 30, "value": 0.3}]
    updated = add_history_point(original, 20, 0.4)
    assert updated == [{"step": 10, "value": 0.5}, {"step": 20, "value": 0.4}, {"step": 30, "value": 0.3}]
    assert original == [{"step": 10, "value": 0.5}, {"step": 30, "value": 0.3}]


def test_a_point_at_a_known_step_replaces_it():
    assert add_history_point([{"step": 10, "value": 0.5}], 10, 0.45) == [{"step": 10, "value": 0.45}]


def test_a_long_history_keeps_its_ends_and_stays_evenly_spread():
    history = []
    for step in range(1, 1001):
        history = add_history_point(history, step, 1.0 / step)
    steps = [point["step"] for point in history]
    assert len(history) == 32
    assert steps[0] == 1 and steps[-1] == 1000 and history[-1]["value"] == pytest.approx(1 / 1000)
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    # Perfectly even would be ~32 apart; dropping only the newest or only early points would not be.
    assert max(gaps) <= 3 * min(gaps)
    assert max(gaps) < 100


def test_max_points_is_respected_when_smaller():
    history = []
    for step in range(10):
        history = add_history_point(history, step, float(step), max_points=3)
    assert history[0]["step"] == 0 and history[-1]["step"] == 9 and len(history) == 3
    with pytest.raises(ValueError, match="max_points must be at least 2"):
        add_history_point([], 1, 1.0, max_points=1)


TRIALS = [
    {"index": 0, "state": "Succeeded", "objectiveValue": 0.80},
    {"index": 1, "state": "Running", "objectiveValue": 0.99},
    {"index": 2, "state": "Succeeded", "objectiveValue": 0.91},
    {"index": 3, "state": "EarlyStopped", "objectiveValue": 0.10},
    {"index": 4, "state": "Succeeded"},
    {"index": 5, "state": "Succeeded", "objectiveValue": 0.91},
    {"index": 6, "state": "Failed"},
    {"index": 7, "state": "Pending"},
]


def test_the_best_trial_is_the_best_succeeded_one_and_ties_go_to_the_lowest_index():
    assert best_trial(TRIALS, "maximize")["index"] == 2  # Running 0.99 and EarlyStopped 0.10 do not count
    assert best_trial(TRIALS, "minimize")["index"] == 0
    assert best_trial(list(reversed(TRIALS)), "maximize")["index"] == 2


def test_no_succeeded_trial_with_a_value_means_no_best():
    assert best_trial([], "minimize") is None
    assert best_trial([{"index": 0, "state": "Succeeded"}, {"index": 1, "state": "Failed"}], "maximize") is None


def test_trials_are_counted_by_state():
    assert trial_counts(TRIALS) == {
        "total": 8,
        "pending": 1,
        "running": 1,
        "succeeded": 4,
        "failed": 1,
        "earlyStopped": 1,
    }
    assert trial_counts([]) == {"total": 0, "pending": 0, "running": 0, "succeeded": 0, "failed": 0, "earlyStopped": 0}
    with pytest.raises(ValueError, match=r"status.trials\[3\].state: unknown state 'Done'"):
        trial_counts([{"index": 3, "state": "Done"}])


def test_the_default_seed_is_stable_per_uid_and_fits_31_bits():
    uid = "4f6c1c36-7d53-4b7e-9a55-0d3f3e0c2a11"
    assert default_seed(uid) == default_seed(uid)
    assert default_seed(uid) != default_seed(uid.replace("4f", "5f"))
    seeds = {default_seed(f"uid-{n}") for n in range(200)}
    assert len(seeds) == 200 and all(0 <= seed < 2**31 for seed in seeds)
    assert default_seed(uid) == 1479363277  # pinned: a changed derivation would reshuffle running searches
