"""Pure pieces of the trainer: errors, URIs, labels, metrics, splits, precision, training arguments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from finetune_trainer.errors import (
    EXIT_COMMUNICATION_TIMEOUT,
    EXIT_CRASH,
    EXIT_INVALID_DATA,
    EXIT_OUT_OF_MEMORY,
    InvalidData,
    classify_exception,
    termination_log_path,
    termination_message,
)
from finetune_trainer.eval_metrics import (
    accuracy,
    bio_spans,
    chrf,
    entity_f1,
    lower_is_better,
    macro_f1,
    word_error_rate,
)
from finetune_trainer.labels import encode_labels, infer_labels
from finetune_trainer.retention import retention_report
from finetune_trainer.sources import hf_repo_id, output_dir_for, resolve_local_path, uri_scheme
from finetune_trainer.tables import split_train_validation
from finetune_trainer.tasks.common import dropout_overrides
from finetune_trainer.training_setup import choose_precision, training_arguments_kwargs


def test_exceptions_map_to_pod_contract_exit_codes():
    import torch

    assert classify_exception(InvalidData("x")) == (EXIT_INVALID_DATA, "InvalidData")
    assert classify_exception(torch.OutOfMemoryError("CUDA out of memory")) == (EXIT_OUT_OF_MEMORY, "OutOfMemory")
    assert classify_exception(RuntimeError("DefaultCPUAllocator: can't allocate memory: out of memory")) == (
        EXIT_OUT_OF_MEMORY,
        "OutOfMemory",
    )
    assert (
        classify_exception(torch.distributed.DistBackendError("Watchdog caught collective operation timeout"))[0]
        == EXIT_COMMUNICATION_TIMEOUT
    )
    assert classify_exception(ValueError("boom")) == (EXIT_CRASH, "TrainerCrashed")
    # What gloo raises on the surviving rank when another rank's process dies mid-collective.
    gone = RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:25827: Connection reset by peer.")
    assert classify_exception(gone) == (EXIT_CRASH, "PeerLost")


def test_termination_message_is_json_within_4096_bytes():
    text = termination_message("InvalidData", "é" * 5000)
    assert len(text.encode()) <= 4096
    assert json.loads(text)["reason"] == "InvalidData"
    assert termination_log_path({"FINETUNE_TERMINATION_LOG": "/tmp/x"}) == "/tmp/x"


def test_uris_resolve_through_the_mount_table():
    mounts = {"data": "/mnt/pvc/data"}
    assert resolve_local_path("pvc://data/sets/train.csv", mounts) == "/mnt/pvc/data/sets/train.csv"
    assert resolve_local_path("file:///abs/x.csv", mounts) == "/abs/x.csv"
    assert resolve_local_path("rel/x.csv", mounts) == "rel/x.csv"
    with pytest.raises(InvalidData, match="claim 'models' is not mounted"):
        resolve_local_path("pvc://models/x", mounts)
    assert [uri_scheme(u) for u in ("hf://a/b", "s3://b/k", "pvc://c/p", "/x")] == ["hf", "s3", "pvc", "file"]
    assert hf_repo_id("hf://sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert output_dir_for("pvc://data/out", {"FINETUNE_VOLUME_MOUNTS": json.dumps(mounts)}) == (
        "/mnt/pvc/data/out",
        None,
    )
    assert output_dir_for("s3://bucket/run1", {})[1] == "s3://bucket/run1"


def test_labels_by_name_or_id_and_inferred_sorted():
    assert infer_labels(["pos", "neg", "pos"]) == ["neg", "pos"]
    assert infer_labels([10, 2, "3"]) == ["2", "3", "10"]
    assert encode_labels(["neg", 1, "pos", 0.0], ["neg", "pos"], source="t.csv", column="label") == [0, 1, 1, 0]
    with pytest.raises(InvalidData, match=r"t.csv row 2: label 7 is not one of neg, pos"):
        encode_labels(["neg", 7], ["neg", "pos"], source="t.csv", column="label")


def test_classification_metrics():
    predictions, references = np.array([0, 1, 1, 2]), np.array([0, 1, 0, 2])
    assert accuracy(predictions, references) == 0.75
    # class 0: tp1 fp0 fn1 -> 2/3; class 1: tp1 fp1 fn0 -> 2/3; class 2: 1
    assert macro_f1(predictions, references) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_entity_f1_counts_exact_spans():
    assert bio_spans(["B-PER", "I-PER", "O", "B-LOC", "I-PER"]) == {("PER", 0, 2), ("LOC", 3, 4), ("PER", 4, 5)}
    scores = entity_f1([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "B-ORG"]])
    assert scores == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_chrf_and_wer():
    assert chrf(["the cat sat"], ["the cat sat"]) == pytest.approx(100.0)
    assert 0 < chrf(["the cat sat"], ["the cat sits"]) < 100
    assert chrf(["xyz"], ["abc"]) == 0.0
    assert word_error_rate(["a b c", "d"], ["a x c", "d e"]) == pytest.approx(2 / 5)
    assert lower_is_better("eval_loss") and lower_is_better("wer") and not lower_is_better("eval_accuracy")


def test_validation_split_is_seeded_and_disjoint():
    train, val = split_train_validation(100, 0.2, seed=7)
    assert len(val) == 20 and not set(train) & set(val) and sorted(train + val) == list(range(100))
    assert split_train_validation(100, 0.2, seed=7) == (train, val)
    assert split_train_validation(100, 0.2, seed=8) != (train, val)


def test_dropout_override_touches_only_dropout_probabilities():
    config = {
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_size": 32,
        "apply_dropout": True,
    }
    assert dropout_overrides(config, 0.3) == {
        "hidden_dropout_prob": 0.3,
        "attention_probs_dropout_prob": 0.3,
        "classifier_dropout": 0.3,
    }


def test_retention_report_before_after_delta():
    report = retention_report(
        {"retention_loss": 1.0, "retention_accuracy": 0.9, "retention_runtime": 3.0},
        {"retention_loss": 1.5, "retention_accuracy": 0.8},
        language_model=True,
    )
    assert report["retention_loss_delta"] == 0.5 and report["retention_accuracy_after"] == 0.8
    assert report["retention_perplexity_before"] == pytest.approx(math.e)
    assert "retention_runtime_before" not in report


def test_precision_falls_back_to_fp32_without_cuda():
    assert choose_precision("auto", False, False)[0] == "fp32"
    assert choose_precision("bf16", False, False) == (
        "fp32",
        "bf16 requested but no CUDA device is available; training in fp32",
    )
    assert choose_precision("auto", True, True)[0] == "bf16"
    assert choose_precision("auto", True, False)[0] == "fp16"
    assert choose_precision("bf16", True, False)[0] == "fp16"


class _Run:
    def __init__(self, **kw):
        from finetune_trainer.arguments import RunArguments

        self.__dict__.update(RunArguments(output_uri="/o", **kw).__dict__)


def test_training_arguments_follow_the_config():
    kwargs = training_arguments_kwargs(
        _Run(warmup_ratio=0.1, checkpoint_steps=50),
        checkpoints_dir="/o/c",
        precision="fp32",
        has_eval=True,
        use_cpu=True,
    )
    assert kwargs["warmup_steps"] == 0.1 and kwargs["save_steps"] == 50 and kwargs["eval_strategy"] == "epoch"
    assert kwargs["save_total_limit"] is None and "load_best_model_at_end" not in kwargs
    assert (
        training_arguments_kwargs(_Run(), checkpoints_dir="c", precision="fp32", has_eval=False, use_cpu=True)[
            "eval_strategy"
        ]
        == "no"
    )
    early = training_arguments_kwargs(
        _Run(early_stopping_metric="loss", eval_strategy="steps", eval_steps=20),
        checkpoints_dir="c",
        precision="bf16",
        has_eval=True,
        use_cpu=False,
    )
    assert early["metric_for_best_model"] == "eval_loss" and early["greater_is_better"] is False
    assert early["save_strategy"] == "steps" and early["save_steps"] == 20 and early["bf16"] is True


def test_training_arguments_reject_impossible_combinations():
    with pytest.raises(InvalidData, match="early_stopping_metric needs evaluation"):
        training_arguments_kwargs(
            _Run(early_stopping_metric="accuracy"), checkpoints_dir="c", precision="fp32", has_eval=False, use_cpu=True
        )
    with pytest.raises(InvalidData, match="eval_steps"):
        training_arguments_kwargs(
            _Run(eval_strategy="steps"), checkpoints_dir="c", precision="fp32", has_eval=True, use_cpu=True
        )
    with pytest.raises(InvalidData, match="warmup_ratio"):
        training_arguments_kwargs(
            _Run(warmup_ratio=1.0), checkpoints_dir="c", precision="fp32", has_eval=True, use_cpu=True
        )
