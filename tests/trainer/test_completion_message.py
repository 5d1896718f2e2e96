"""The success termination message: the final eval metrics a search trial's objective is read from."""

from __future__ import annotations

import json

from finetune_trainer import main
from finetune_trainer.errors import TERMINATION_MESSAGE_LIMIT, completion_message


def test_message_carries_step_and_finite_numbers_only():
    body = json.loads(
        completion_message(
            40,
            {
                "eval_loss": 0.25,
                "eval_accuracy": 1,
                "eval_nan": float("nan"),
                "eval_inf": float("inf"),
                "eval_flag": True,
                "eval_name": "x",
            },
        )
    )
    assert body == {
        "reason": "Completed",
        "message": "trained to step 40",
        "metrics": {"eval_loss": 0.25, "eval_accuracy": 1.0},
    }


def test_longest_names_are_dropped_until_the_message_fits():
    metrics = {f"eval_{'x' * n}": 0.123456789 for n in range(1, 120)}
    metrics["eval_loss"] = 0.5
    text = completion_message(7, metrics)
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    kept = json.loads(text)["metrics"]
    assert "eval_loss" in kept and "eval_x" in kept
    dropped = set(metrics) - set(kept)
    assert dropped and min(map(len, dropped)) > max(len(k) for k in kept if k.startswith("eval_x"))
    # Nothing was dropped that would have fitted: one more (the shortest dropped) would overflow.
    shortest = min(dropped, key=len)
    one_more = {**json.loads(text), "metrics": {**kept, shortest: metrics[shortest]}}
    assert len(json.dumps(one_more, sort_keys=True).encode()) > TERMINATION_MESSAGE_LIMIT


def test_a_successful_run_writes_its_final_eval_metrics(
    tiny_bert, sentiment_files, write_config, tmp_path, termination_log
):
    train, validation = sentiment_files
    out = tmp_path / "out"
    config = write_config(
        task="text-classification",
        model_uri=tiny_bert,
        train_uri=train,
        validation_uri=validation,
        output_uri=str(out),
        max_steps=4,
        batch_size=16,
        learning_rate=5e-3,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=4,
        max_seq_length=16,
    )
    assert main(config) == 0
    body = json.loads(termination_log.read_text())
    assert body["reason"] == "Completed" and body["message"] == "trained to step 4"
    written = json.loads((out / "metrics.json").read_text())
    assert body["metrics"]["eval_accuracy"] == written["eval_accuracy"]
    assert body["metrics"]["eval_loss"] == written["eval_loss"]
    assert all(key.startswith("eval_") for key in body["metrics"])
