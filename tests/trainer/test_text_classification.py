"""text-classification end to end: main() in-process on a tiny BERT and generated sentiment data."""

from __future__ import annotations

import json
import os

from finetune_trainer import main
from finetune_trainer.errors import EXIT_INVALID_DATA, EXIT_OK
from trainer_data import sentiment_rows, write_csv


def _base(tiny_bert, train, validation, out, **extra):
    config = dict(
        task="text-classification",
        model_uri=tiny_bert,
        train_uri=train,
        validation_uri=validation,
        output_uri=str(out),
        max_steps=40,
        batch_size=16,
        learning_rate=5e-3,
        logging_steps=10,
        checkpoint_steps=20,
        eval_strategy="steps",
        eval_steps=20,
        max_seq_length=16,
    )
    return {**config, **extra}


def test_training_learns_the_task_and_writes_model_metrics_and_card(tiny_bert, sentiment_files, write_config, tmp_path):
    train, validation = sentiment_files
    out = tmp_path / "out"
    code = main(
        write_config(
            **_base(
                tiny_bert, train, validation, out, weight_decay=0.01, warmup_ratio=0.1, label_smoothing=0.1, dropout=0.0
            )
        )
    )
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 40
    assert metrics["labels"] == ["negative", "positive"]
    assert metrics["eval_accuracy"] >= 0.85 and metrics["eval_accuracy"] > metrics["eval_accuracy_before"]
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    assert 0.0 <= metrics["eval_f1_macro"] <= 1.0
    assert metrics["precision"] == "fp32"
    assert metrics["train_samples_per_second"] > 0
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["hidden_dropout_prob"] == 0.0 and config["attention_probs_dropout_prob"] == 0.0
    card = (out / "README.md").read_text()
    assert "base_model: " + tiny_bert in card and "negative, positive" in card
    assert f"| accuracy | {metrics['eval_accuracy_before']:.4f} | {metrics['eval_accuracy']:.4f} |" in card
    # checkpoints at 20 and 40, both complete
    assert sorted(os.listdir(out / "checkpoints" / "checkpoint-40")).count("COMPLETE") == 1


def test_validation_split_labels_as_ids_and_early_stopping(tiny_bert, tmp_path, write_config):
    rows = [{"sentence": r["text"], "y": 1 if r["label"] == "positive" else 0} for r in sentiment_rows(80, seed=3)]
    train = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "out"
    config = write_config(
        task="text-classification",
        model_uri=tiny_bert,
        train_uri=train,
        validation_split=0.25,
        output_uri=str(out),
        columns={"text": "sentence", "label": "y"},
        labels=["negative", "positive"],
        epochs=30,
        batch_size=16,
        learning_rate=1e-2,
        eval_strategy="epoch",
        early_stopping_metric="accuracy",
        early_stopping_patience=1,
        max_seq_length=16,
    )
    assert main(config) == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["train_rows"] == 60 and metrics["data"]["validation_rows"] == 20
    assert metrics["stopped_early"] is True and metrics["epoch"] < 30
    assert metrics["best_checkpoint"] is not None


def test_unknown_validation_label_is_invalid_data_naming_file_and_row(
    tiny_bert, tmp_path, write_config, termination_log
):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(20, seed=1))
    rows = sentiment_rows(5, seed=2)
    rows[3]["label"] = "maybe"
    validation = write_csv(tmp_path / "validation.csv", rows)
    code = main(write_config(**_base(tiny_bert, train, validation, tmp_path / "out")))
    assert code == EXIT_INVALID_DATA
    message = json.loads(termination_log.read_text())
    assert message == {
        "reason": "InvalidData",
        "message": "validation.csv row 4: label 'maybe' is not one of negative, positive",
    }


def test_missing_column_and_empty_file_are_invalid_data(tiny_bert, tmp_path, write_config, termination_log):
    train = write_csv(tmp_path / "train.csv", [{"review": "good", "label": "positive"}])
    assert main(write_config(**_base(tiny_bert, train, None, tmp_path / "out"))) == EXIT_INVALID_DATA
    message = json.loads(termination_log.read_text())["message"]
    assert "train.csv: missing column 'text'" in message and "review" in message
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(write_config(**_base(tiny_bert, str(empty), None, tmp_path / "out"))) == EXIT_INVALID_DATA
    assert "empty.csv: the file is empty" in json.loads(termination_log.read_text())["message"]


def test_bad_config_key_is_invalid_data(tmp_path, write_config, termination_log):
    code = main(write_config(task="text-classification", model_uri="x", train_uri="y", output_uri="z", learning_rat=1))
    assert code == EXIT_INVALID_DATA
    assert "learning_rat" in json.loads(termination_log.read_text())["message"]


def test_jsonl_and_parquet_inputs_train(tiny_bert, tmp_path, write_config):
    import pandas as pd

    rows = sentiment_rows(32, seed=5)
    pd.DataFrame(rows).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    pd.DataFrame(rows).to_parquet(tmp_path / "val.parquet")
    for fmt, train, validation in (("jsonl", "train.jsonl", None), ("parquet", "val.parquet", "val.parquet")):
        out = tmp_path / f"out-{fmt}"
        config = _base(
            tiny_bert,
            str(tmp_path / train),
            str(tmp_path / validation) if validation else None,
            out,
            dataset_format=fmt,
        )
        config.update(max_steps=2, eval_steps=2)
        assert main(write_config(**config)) == EXIT_OK
        assert json.loads((out / "metrics.json").read_text())["data"]["train_rows"] == 32


def test_pvc_uris_resolve_through_volume_mounts_and_token_dropout_trains(
    tiny_bert, sentiment_files, write_config, tmp_path, monkeypatch
):
    import shutil

    data, models = tmp_path / "mnt-data", tmp_path / "mnt-models"
    data.mkdir()
    shutil.copy(sentiment_files[0], data / "train.csv")
    shutil.copytree(tiny_bert, models / "base")
    monkeypatch.setenv("FINETUNE_VOLUME_MOUNTS", json.dumps({"data": str(data), "models": str(models)}))
    config = _base(
        "pvc://models/base", "pvc://data/train.csv", None, "pvc://models/out", augment=True, token_dropout=0.2
    )
    config.update(max_steps=3, eval_strategy="no")
    assert main(write_config(**config)) == EXIT_OK
    assert (models / "out" / "metrics.json").exists()


def test_token_dropout_replaces_only_ordinary_tokens():
    import numpy as np
    from finetune_trainer.augment import drop_tokens

    ids = [2, 10, 11, 12, 13, 3]
    dropped = drop_tokens(ids, 1.0, 4, {2, 3}, np.random.default_rng(0))
    assert dropped == [2, 4, 4, 4, 4, 3]
    assert drop_tokens(ids, 0.0, 4, {2, 3}, np.random.default_rng(0)) == ids
