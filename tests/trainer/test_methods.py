"""Methods full / lora / freeze, and retention (forgetting) metrics, through main()."""

from __future__ import annotations

import json

import pytest
import torch
from finetune_trainer import main
from finetune_trainer.arguments import ModelArguments
from finetune_trainer.errors import EXIT_OK
from finetune_trainer.methods import apply_freeze, count_parameters, default_lora_targets
from trainer_data import sentiment_rows, write_csv
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
)


def _config(tiny_bert, train, validation, out, **extra):
    config = dict(
        task="text-classification",
        model_uri=tiny_bert,
        train_uri=train,
        validation_uri=validation,
        output_uri=str(out),
        max_steps=30,
        batch_size=16,
        learning_rate=5e-3,
        checkpoint_steps=100,
        eval_strategy="no",
        max_seq_length=16,
    )
    return {**config, **extra}


def test_default_lora_targets_per_architecture():
    bert = BertForSequenceClassification(
        BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=10)
    )
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=10))
    assert default_lora_targets(bert) == ["query", "value"]
    assert default_lora_targets(gpt2) == ["c_attn"]


def test_freeze_trains_only_top_layers_and_head():
    config = BertConfig(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=8, vocab_size=10, num_labels=2
    )
    model = apply_freeze(BertForSequenceClassification(config), 1)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(name.startswith(("bert.encoder.layer.3.", "bert.pooler.", "classifier.")) for name in trainable)
    assert any(name.startswith("classifier.") for name in trainable) and any(".layer.3." in name for name in trainable)
    assert not any("embeddings" in name for name in trainable)
    assert 0 < count_parameters(model)[0] < count_parameters(model)[1]


def test_lora_saves_an_adapter_and_a_merged_model_that_loads(tiny_bert, sentiment_files, write_config, tmp_path):
    train, validation = sentiment_files
    out = tmp_path / "out"
    config = _config(
        tiny_bert, train, validation, out, method="lora", lora_r=4, merge_adapter=True, learning_rate=1e-2, max_steps=10
    )
    assert main(write_config(**config)) == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "lora" and metrics["lora_target_modules"] == ["query", "value"]
    assert metrics["trainable_parameters"] < metrics["total_parameters"] / 2
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS"
    merged = AutoModelForSequenceClassification.from_pretrained(out / "merged")
    assert merged.config.id2label == {0: "negative", 1: "positive"}
    # lora_B starts at zero: non-zero values mean the adapter trained.
    from safetensors.torch import load_file

    adapter_weights = load_file(out / "adapter_model.safetensors")
    lora_b = [w for name, w in adapter_weights.items() if "lora_B" in name]
    assert lora_b and all(w.abs().sum() > 0 for w in lora_b)
    assert any("classifier" in name for name in adapter_weights)  # the head is saved with the adapter
    assert not list((out / "checkpoints").glob("checkpoint-*"))  # step 10 is no checkpoint_steps boundary
    assert "library_name: peft" in (out / "README.md").read_text()


def test_freeze_keeps_frozen_weights_unchanged(tiny_bert, sentiment_files, write_config, tmp_path):
    train, validation = sentiment_files
    out = tmp_path / "out"
    assert (
        main(write_config(**_config(tiny_bert, train, validation, out, method="freeze", freeze_trainable_layers=1)))
        == EXIT_OK
    )
    before = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    after = AutoModelForSequenceClassification.from_pretrained(out)
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    assert torch.equal(
        b["bert.encoder.layer.0.attention.self.query.weight"], a["bert.encoder.layer.0.attention.self.query.weight"]
    )
    assert torch.equal(b["bert.embeddings.word_embeddings.weight"], a["bert.embeddings.word_embeddings.weight"])
    assert not torch.equal(
        b["bert.encoder.layer.1.attention.self.query.weight"], a["bert.encoder.layer.1.attention.self.query.weight"]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_parameters"] < metrics["total_parameters"]


def test_retention_metrics_before_after_and_delta(tiny_bert, sentiment_files, write_config, tmp_path):
    train, validation = sentiment_files
    # Retention data with the labels flipped: learning the task must make the model worse on it.
    flipped = [
        {"text": r["text"], "label": "negative" if r["label"] == "positive" else "positive"}
        for r in sentiment_rows(32, seed=9)
    ]
    retention = write_csv(tmp_path / "retention.csv", flipped)
    out = tmp_path / "out"
    assert main(write_config(**_config(tiny_bert, train, validation, out, retention_uri=retention))) == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["retention_loss_delta"] == metrics["retention_loss_after"] - metrics["retention_loss_before"]
    assert metrics["retention_loss_delta"] > 0
    assert metrics["retention_accuracy_after"] < metrics["retention_accuracy_before"]
    assert metrics["data"]["retention_rows"] == 32
    card = (out / "README.md").read_text()
    assert (
        f"| loss | {metrics['retention_loss_before']:.4f} | {metrics['retention_loss_after']:.4f} | {metrics['retention_loss_delta']:.4f} |"
        in card
    )


def test_model_arguments_reject_unknown_method():
    import pytest

    with pytest.raises(ValueError, match="method must be full, lora or freeze"):
        ModelArguments(task="text-classification", model_uri="x", method="prefix")


def test_named_test_sets_are_evaluated_after_training_under_their_names(
    tiny_bert, sentiment_files, write_config, tmp_path
):
    train, validation = sentiment_files
    rows = sentiment_rows(24, seed=11)
    same = write_csv(tmp_path / "test.csv", rows)
    # The same sentences with the labels flipped: every right answer on one is a wrong answer on the other.
    flipped = write_csv(
        tmp_path / "flipped.csv",
        [{"text": r["text"], "label": "negative" if r["label"] == "positive" else "positive"} for r in rows],
    )
    out = tmp_path / "out"
    config = _config(tiny_bert, train, validation, out, test_uris={"in_domain": same, "flipped": flipped})
    assert main(write_config(**config)) == EXIT_OK

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_in_domain_accuracy"] > 0.5
    assert metrics["test_in_domain_accuracy"] + metrics["test_flipped_accuracy"] == pytest.approx(1.0)
    assert {"test_in_domain_loss", "test_in_domain_f1_macro", "test_flipped_loss"} <= set(metrics)
    assert not any(key.startswith("test_") and key.endswith(("_runtime", "_per_second")) for key in metrics)
    assert metrics["data"]["test_rows"] == {"in_domain": 24, "flipped": 24}
    assert "eval_accuracy" in metrics and "test_in_domain_accuracy_before" not in metrics
    card = (out / "README.md").read_text()
    assert f"- test `in_domain` (held out, evaluated after training): `{same}` (24 rows)" in card
    assert f"| in_domain_accuracy | {metrics['test_in_domain_accuracy']:.4f} |" in card


def test_bad_test_data_fails_the_run_before_training(tiny_bert, sentiment_files, write_config, tmp_path):
    train, validation = sentiment_files
    bad = write_csv(tmp_path / "bad.csv", [{"text": "fine", "label": "maybe"}, {"text": "ok", "label": "positive"}])
    out = tmp_path / "out"
    config = _config(tiny_bert, train, validation, out, test_uris={"ood": bad})
    assert main(write_config(**config)) != EXIT_OK
    assert not (out / "metrics.json").exists()
