"""Fixtures for the trainer tests: tiny models built from configs (no hub), tiny generated data."""

from __future__ import annotations

import json
import os

import pytest
from trainer_data import SPECIAL, WORDS, sentiment_rows, write_csv

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# In-process runs must not bind the trainer's /metrics port (9400) on the test machine.
os.environ.setdefault("FINETUNE_METRICS_PORT", "0")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer BERT with a word-level vocabulary, saved with its tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=2,
    )
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def write_config(tmp_path):
    """Write a trainer config (flat JSON of finetune_trainer.arguments fields) and return its path."""

    def write(**fields) -> str:
        path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.json"
        path.write_text(json.dumps(fields))
        return str(path)

    return write


@pytest.fixture
def sentiment_files(tmp_path):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(96, seed=1))
    validation = write_csv(tmp_path / "validation.csv", sentiment_rows(32, seed=2))
    return train, validation


@pytest.fixture
def termination_log(tmp_path, monkeypatch):
    path = tmp_path / "termination-log"
    monkeypatch.setenv("FINETUNE_TERMINATION_LOG", str(path))
    return path
