"""The median stopping rule: when a running trial is judged, against what, and what it says."""

from __future__ import annotations

import pytest
from finetune_operator.search.early_stopping import median_stop


def history(*points):
    return [{"step": step, "value": value} for step, value in points]


COMPLETED_LOSS = [
    history((20, 0.9), (40, 0.40), (60, 0.30)),
    history((20, 0.8), (40, 0.42), (60, 0.35)),
    history((20, 0.7), (40, 0.50), (60, 0.33)),
]


def stop(
    running,
    completed=COMPLETED_LOSS,
    *,
    goal="minimize",
    min_steps=0,
    min_trials=2,
    metric="eval_loss",
    judged_through=None,
):
    return median_stop(
        running,
        completed,
        goal=goal,
        min_steps=min_steps,
        min_trials=min_trials,
        metric=metric,
        judged_through=judged_through,
    )


def test_a_trial_worse_than_the_median_at_its_step_is_stopped_with_the_numbers():
    message = stop(history((20, 0.75), (40, 0.61)))
    assert message == "eval_loss 0.61 at step 40 is worse than the median 0.42 of 3 completed trials at that step"


def test_every_new_evaluation_is_judged_so_a_batch_of_reports_gives_the_same_verdict():
    # Behind at step 20 (0.95 against 0.8), level by step 40: seen one report at a time it would have been
    # stopped at step 20, so seen in one batch it is too.
    running = history((20, 0.95), (40, 0.40))
    assert stop(running) == "eval_loss 0.95 at step 20 is worse than the median 0.8 of 3 completed trials at that step"
    assert stop(running[:1]) == stop(running)


def test_evaluations_judged_by_an_earlier_pass_are_not_judged_again():
    # Step 20 was judged when it arrived (fewer trials had completed then); only step 40 is new.
    running = history((20, 0.95), (40, 0.40))
    assert stop(running, judged_through=20) is None
    assert stop(history((20, 0.95), (40, 0.61)), judged_through=20) == (
        "eval_loss 0.61 at step 40 is worse than the median 0.42 of 3 completed trials at that step"
    )


def test_a_trial_at_or_better_than_the_median_keeps_running():
    assert stop(history((20, 0.8), (40, 0.42))) is None  # equal to the median is not worse
    assert stop(history((20, 0.8), (40, 0.41))) is None


def test_the_best_value_so_far_is_judged_not_the_latest():
    # It dipped to 0.40 at step 20 and wobbled up: its best beats the medians of both steps.
    assert stop(history((20, 0.40), (40, 0.55))) is None


def test_maximize_stops_trials_below_the_median():
    accuracy = [history((10, 0.6), (20, 0.80)), history((10, 0.5), (20, 0.70)), history((10, 0.7), (20, 0.90))]
    message = stop(history((10, 0.6), (20, 0.75)), accuracy, goal="maximize", metric="eval_accuracy")
    assert message == "eval_accuracy 0.75 at step 20 is worse than the median 0.8 of 3 completed trials at that step"
    assert stop(history((10, 0.6), (20, 0.85)), accuracy, goal="maximize", metric="eval_accuracy") is None
    # The same numbers under minimize are a good loss, not a bad one.
    assert stop(history((10, 0.5), (20, 0.75)), accuracy, goal="minimize") is None


def test_no_trial_is_judged_before_min_steps():
    running = history((20, 5.0), (40, 5.0))
    assert stop(running, min_steps=41) is None
    assert stop(running, min_steps=40) is not None


def test_too_few_completed_trials_give_no_median():
    running = history((40, 5.0))
    assert stop(running, COMPLETED_LOSS[:1], min_trials=2) is None
    assert stop(running, [], min_trials=1) is None
    assert stop(running, COMPLETED_LOSS[:1], min_trials=1) == (
        "eval_loss 5 at step 40 is worse than the median 0.4 of 1 completed trial at that step"
    )


def test_unaligned_steps_use_each_completed_trials_latest_point_at_or_before_the_step():
    completed = [
        history((25, 0.50), (50, 0.20)),  # at step 45: 0.50 (step 25)
        history((10, 0.90), (45, 0.30)),  # at step 45: 0.30 (exact step)
        history((50, 0.10), (100, 0.05)),  # nothing at or before 45: left out
    ]
    message = stop(history((15, 0.9), (45, 0.45)), completed)
    assert message == "eval_loss 0.45 at step 45 is worse than the median 0.4 of 2 completed trials at that step"
    # Leaving the third trial out leaves too few for min_trials 3.
    assert stop(history((15, 0.9), (45, 0.45)), completed, min_trials=3) is None


def test_an_empty_history_is_not_judged():
    assert stop([]) is None


def test_an_unknown_goal_is_refused():
    with pytest.raises(ValueError, match="goal: 'lower' is not minimize or maximize"):
        stop(history((40, 1.0)), goal="lower")


def test_evaluations_at_or_after_the_final_step_are_not_judged():
    # Behind the median at its last evaluation (step 60 of 60): stopping it would save nothing.
    running = history((20, 0.8), (40, 0.42), (60, 0.9))
    assert stop(running) is not None
    assert (
        median_stop(
            running, COMPLETED_LOSS, goal="minimize", min_steps=0, min_trials=2, metric="eval_loss", final_step=60
        )
        is None
    )
    assert median_stop(
        running, COMPLETED_LOSS, goal="minimize", min_steps=0, min_trials=2, metric="eval_loss", final_step=61
    )
