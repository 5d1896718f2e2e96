"""The divergence rule: a trial whose loss is not finite or far above its own start is stopped (pure)."""

from __future__ import annotations

from finetune_operator.search.divergence import diverged, judged_loss, threshold


def evaluations(*points, metric="eval_loss", **others):
    return [(step, {metric: value, **others}) for step, value in points]


def test_a_loss_far_above_the_untrained_models_is_diverged_at_the_first_evaluation():
    # The search of issue 19: lr 0.5, eval_loss 0.69 untrained (step 0), 49.2 at step 10.
    message = diverged(evaluations((0, 0.693), (10, 49.2)), "eval_loss", final_step=25)
    assert message == (
        "eval_loss 49.2 at step 10 is far above its start 0.693 at step 0 (more than 3x and 1 higher): "
        "the training diverged; lower the learning rate or its range"
    )


def test_far_means_three_times_the_start_and_at_least_one_higher():
    assert threshold(0.693) == 3 * 0.693
    assert threshold(0.05) == 1.05  # a small start: ordinary overfitting (0.05 -> 0.2) is not divergence
    assert diverged(evaluations((0, 0.69), (10, 2.0)), "eval_loss", final_step=None) is None
    assert diverged(evaluations((0, 0.69), (10, 2.1)), "eval_loss", final_step=None) is not None
    assert diverged(evaluations((10, 0.05), (20, 0.9)), "eval_loss", final_step=None) is None
    assert diverged(evaluations((10, 0.05), (20, 1.1)), "eval_loss", final_step=None) is not None


def test_a_healthy_or_overfitting_trial_is_not_diverged():
    assert diverged(evaluations((0, 0.69), (10, 0.3), (20, 0.1), (30, 0.4)), "eval_loss", final_step=40) is None
    assert diverged([], "eval_loss", final_step=None) is None


def test_a_loss_that_is_no_longer_reported_next_to_its_accuracy_is_not_finite():
    # The trainer drops non-finite numbers from its reports: eval_accuracy without eval_loss means NaN/inf.
    reported = [(0, {"eval_loss": 0.69, "eval_accuracy": 0.5}), (10, {"eval_accuracy": 0.5})]
    assert diverged(reported, "eval_loss", final_step=25) == (
        "eval_loss is not a finite number at step 10 (it was 0.69 at step 0): the training diverged; "
        "lower the learning rate or its range"
    )
    assert diverged([(0, {"eval_loss": 0.69}), (10, {"eval_loss": float("nan")})], "eval_loss", final_step=None)


def test_an_evaluation_of_another_set_says_nothing_about_the_loss():
    # The retention set's evaluation carries retention_* metrics only; a trial that never reported its loss
    # is left to the ObjectiveMissing check at its end.
    reported = [(0, {"eval_loss": 0.69}), (0, {"retention_loss": 2.0}), (10, {"eval_loss": 0.5})]
    assert diverged(reported, "eval_loss", final_step=None) is None
    assert diverged([(10, {"eval_accuracy": 0.5}), (20, {"eval_accuracy": 0.6})], "eval_loss", final_step=None) is None


def test_evaluations_at_or_after_the_final_step_are_not_judged():
    assert diverged(evaluations((0, 0.69), (25, 49.2)), "eval_loss", final_step=25) is None
    assert diverged([(0, {"eval_loss": 0.69}), (25, {"eval_accuracy": 0.5})], "eval_loss", final_step=25) is None


def test_the_objective_is_judged_when_it_is_a_loss_else_eval_loss():
    assert judged_loss("eval_loss") == "eval_loss"
    assert judged_loss("eval_train_loss") == "eval_train_loss"
    assert judged_loss("eval_accuracy") == "eval_loss"
    assert judged_loss("eval_f1") == "eval_loss"
