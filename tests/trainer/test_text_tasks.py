"""causal-lm, seq2seq and token-classification: tiny models on tiny generated data; the loss goes down."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
import torch
from finetune_trainer import main
from finetune_trainer.errors import EXIT_INVALID_DATA, EXIT_OK
from finetune_trainer.tasks.causal_lm import encode_pair
from finetune_trainer.tasks.token_classification import align_labels, as_list, infer_tags
from trainer_data import LM_WORDS, word_level_tokenizer


def _sentences(n, seed):
    rng = random.Random(seed)
    return [
        f"the {rng.choice(['cat', 'dog', 'bird'])} {rng.choice(['sat', 'ran'])} on the {rng.choice(['mat', 'tree', 'roof'])}"
        for _ in range(n)
    ]


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = word_level_tokenizer(
        LM_WORDS + ["say", "twice", ":"], specials=["<pad>", "<unk>", "<eos>"], eos="<eos>"
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64, eos_token_id=2, bos_token_id=2
        )
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory):
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = word_level_tokenizer(LM_WORDS, specials=["<pad>", "</s>", "<unk>"], eos="</s>", append_eos=True)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_ff=37,
        d_kv=16,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _run(write_config, **config):
    base = dict(
        max_steps=30,
        batch_size=16,
        learning_rate=5e-3,
        checkpoint_steps=100,
        eval_strategy="steps",
        eval_steps=30,
        max_seq_length=24,
    )
    return main(write_config(**{**base, **config}))


def test_causal_lm_text_learns_and_reports_perplexity_and_retention(tiny_gpt2, tmp_path, write_config):
    pd.DataFrame({"text": _sentences(64, 1)}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"text": _sentences(16, 2)}).to_csv(tmp_path / "val.csv", index=False)
    pd.DataFrame({"text": ["a bird flew over the tree quickly today"] * 8}).to_csv(tmp_path / "retain.csv", index=False)
    out = tmp_path / "out"
    code = _run(
        write_config,
        task="causal-lm",
        model_uri=tiny_gpt2,
        train_uri=str(tmp_path / "train.csv"),
        validation_uri=str(tmp_path / "val.csv"),
        retention_uri=str(tmp_path / "retain.csv"),
        output_uri=str(out),
    )
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    assert metrics["eval_perplexity"] < metrics["eval_perplexity_before"]
    assert metrics["eval_perplexity"] == pytest.approx(2.718281828 ** metrics["eval_loss"], rel=1e-6)
    for key in (
        "retention_loss_delta",
        "retention_perplexity_before",
        "retention_perplexity_after",
        "retention_perplexity_delta",
    ):
        assert key in metrics


def test_causal_lm_prompt_response_masks_the_prompt(tiny_gpt2, tmp_path, write_config):
    assert encode_pair([5, 6], [7, 8, 2], 4) == ([5, 6, 7, 8], [-100, -100, 7, 8])
    rng = random.Random(3)
    rows = []
    for _ in range(64):
        word = rng.choice(["cat", "dog", "bird", "tree"])
        rows.append({"prompt": f"say {word} twice :", "response": f"{word} {word}"})
    pd.DataFrame(rows).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    out = tmp_path / "out"
    code = _run(
        write_config,
        task="causal-lm",
        model_uri=tiny_gpt2,
        train_uri=str(tmp_path / "train.jsonl"),
        dataset_format="jsonl",
        validation_split=0.25,
        output_uri=str(out),
    )
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["format"] == "prompt/response"
    assert metrics["eval_loss"] < metrics["eval_loss_before"]


def test_seq2seq_learns_to_copy_and_reports_chrf(tiny_t5, tmp_path, write_config):
    sentences = _sentences(96, 4)
    pd.DataFrame({"src": sentences[:80], "tgt": sentences[:80]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"src": sentences[80:], "tgt": sentences[80:]}).to_csv(tmp_path / "val.csv", index=False)
    out = tmp_path / "out"
    code = _run(
        write_config,
        task="seq2seq",
        model_uri=tiny_t5,
        train_uri=str(tmp_path / "train.csv"),
        validation_uri=str(tmp_path / "val.csv"),
        output_uri=str(out),
        columns={"source": "src", "target": "tgt"},
        learning_rate=1e-2,
        max_steps=40,
        eval_steps=40,
        max_seq_length=12,
    )
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    assert 0.0 <= metrics["eval_chrf_before"] < metrics["eval_chrf"] <= 100.0


def test_token_classification_learns_entities(tiny_bert, tmp_path, write_config):
    rng = random.Random(5)

    def rows(n):
        out = []
        for _ in range(n):
            animal, place = rng.choice(["cat", "dog"]), rng.choice(["movie", "film", "story"])
            tokens = ["the", animal, "was", "in", "the", place]
            out.append({"tokens": tokens, "tags": ["O", "B-ANIMAL", "O", "O", "O", "B-PLACE"]})
        return out

    pd.DataFrame(rows(64)).to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    # csv cells: whitespace-separated words and a JSON list, both accepted
    val = pd.DataFrame(rows(16))
    val["tokens"] = val["tokens"].map(" ".join)
    val["tags"] = val["tags"].map(json.dumps)
    val.to_csv(tmp_path / "val.csv", index=False)
    out = tmp_path / "out"
    code = _run(
        write_config,
        task="token-classification",
        model_uri=tiny_bert,
        train_uri=str(tmp_path / "train.jsonl"),
        dataset_format="jsonl",
        output_uri=str(out),
        validation_split=0.25,
        max_steps=40,
        eval_steps=40,
    )
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == ["O", "B-ANIMAL", "B-PLACE"]
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    assert metrics["eval_f1"] > metrics["eval_f1_before"]


def test_token_classification_rejects_mismatched_tags(tiny_bert, tmp_path, write_config, termination_log):
    pd.DataFrame([{"tokens": ["the", "cat"], "tags": ["O"]}]).to_json(
        tmp_path / "train.jsonl", orient="records", lines=True
    )
    code = _run(
        write_config,
        task="token-classification",
        model_uri=tiny_bert,
        train_uri=str(tmp_path / "train.jsonl"),
        dataset_format="jsonl",
        output_uri=str(tmp_path / "out"),
    )
    assert code == EXIT_INVALID_DATA
    assert (
        json.loads(termination_log.read_text())["message"]
        == "train.jsonl row 1: 2 tokens but 1 tags; give one tag per token"
    )


def test_token_label_alignment_and_cells():
    assert align_labels([None, 0, 0, 1, None], [3, 4]) == [-100, 3, -100, 4, -100]
    assert as_list("a b", source="f", row=1, column_name="tokens") == ["a", "b"]
    assert as_list('["a", "b c"]', source="f", row=1, column_name="tokens") == ["a", "b c"]
    assert infer_tags([["B-X", "O"], ["I-X"]]) == ["O", "B-X", "I-X"]


@pytest.mark.parametrize("method", ["lora", "freeze"])
def test_causal_lm_lora_and_freeze(method, tiny_gpt2, tmp_path, write_config):
    pd.DataFrame({"text": _sentences(32, 6)}).to_csv(tmp_path / "train.csv", index=False)
    out = tmp_path / "out"
    code = _run(
        write_config,
        task="causal-lm",
        model_uri=tiny_gpt2,
        train_uri=str(tmp_path / "train.csv"),
        validation_split=0.25,
        output_uri=str(out),
        method=method,
        merge_adapter=True,
        freeze_trainable_layers=1,
        max_steps=10,
        eval_steps=10,
    )
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_parameters"] < metrics["total_parameters"]
    if method == "lora":
        assert metrics["lora_target_modules"] == ["c_attn"]
        from transformers import AutoModelForCausalLM

        merged = AutoModelForCausalLM.from_pretrained(out / "merged")
        assert not any("lora" in name for name, _ in merged.named_parameters())
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
