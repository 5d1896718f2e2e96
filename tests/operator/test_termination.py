"""completed_metrics: a search trial's final metrics, read from its pods' termination messages."""

from __future__ import annotations

import json

import pytest
from finetune_operator.termination import completed_metrics

INDEX = "batch.kubernetes.io/job-completion-index"


def pod(index: str | None, message: str | None, exit_code: int = 0, container: str = "trainer") -> dict:
    terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}
    if message is not None:
        terminated["message"] = message
    metadata = {"name": f"job-{index}", "annotations": {INDEX: index} if index is not None else {}}
    return {
        "metadata": metadata,
        "status": {"containerStatuses": [{"name": container, "state": {"terminated": terminated}}]},
    }


def success(**metrics) -> str:
    return json.dumps({"reason": "Completed", "message": "trained to step 40", "metrics": metrics})


def test_rank_zero_pods_metrics_win_over_other_ranks():
    pods = [pod("1", success(eval_loss=9.0)), pod("0", success(eval_accuracy=0.9, eval_loss=0.25))]
    assert completed_metrics(pods) == {"eval_accuracy": 0.9, "eval_loss": 0.25}


def test_any_succeeded_pod_is_used_when_rank_zero_has_no_metrics():
    pods = [pod("0", "", exit_code=0), pod(None, success(eval_loss=0.5))]
    assert completed_metrics(pods) == {"eval_loss": 0.5}


def test_failed_containers_and_other_containers_are_ignored():
    pods = [
        pod("0", success(eval_loss=0.1), exit_code=1),
        pod("0", success(eval_loss=0.2), container="sidecar"),
        {
            "metadata": {"annotations": {INDEX: "0"}},
            "status": {
                "containerStatuses": [{"name": "trainer", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]
            },
        },
    ]
    assert completed_metrics(pods) is None


def test_a_retried_rank_zero_uses_its_succeeded_attempt():
    pods = [
        pod("0", json.dumps({"reason": "TrainerCrashed", "message": "boom"}), exit_code=1),
        pod("0", success(eval_f1=0.7)),
    ]
    assert completed_metrics(pods) == {"eval_f1": 0.7}


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        '{"reason": "Completed"',
        "[1, 2]",
        '"text"',
        json.dumps({"reason": "Completed", "metrics": [1]}),
        json.dumps({"reason": "Completed", "message": "trained to step 3"}),
        "[" * 100_000,
    ],
)
def test_malformed_messages_give_none(message):
    assert completed_metrics([pod("0", message)]) is None


def test_non_numbers_nan_infinity_and_huge_ints_are_dropped():
    message = (
        '{"metrics": {"eval_loss": NaN, "eval_a": Infinity, "eval_b": "0.5", "eval_c": true, '
        '"eval_d": null, "eval_e": 1' + "0" * 400 + ', "eval_f": 2, "eval_g": 1e999, "eval_h": -0.5}}'
    )
    assert completed_metrics([pod("0", message)]) == {"eval_f": 2.0, "eval_h": -0.5}


def test_no_pods_or_pods_without_status_give_none():
    assert completed_metrics([]) is None
    assert completed_metrics([{"metadata": {"name": "x"}}, {"status": {"containerStatuses": None}}]) is None


def test_reads_what_the_trainer_writes():
    from finetune_trainer.errors import completion_message

    text = completion_message(40, {"eval_loss": 0.25, "eval_accuracy": 0.875, "eval_runtime": 1.5})
    assert completed_metrics([pod("0", text)]) == {"eval_loss": 0.25, "eval_accuracy": 0.875, "eval_runtime": 1.5}
