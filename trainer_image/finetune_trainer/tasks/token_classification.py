"""token-classification: `tokens`/`tags` lists (BIO tags) -> a tag per word; seqeval-style entity F1."""

from __future__ import annotations

import json

import numpy as np
from datasets import Dataset
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

from finetune_trainer.errors import InvalidData
from finetune_trainer.eval_metrics import accuracy, entity_f1
from finetune_trainer.tables import source_name
from finetune_trainer.tasks.common import argmax_logits, classification_config, column, load_frames, table_reader
from finetune_trainer.tasks.task_setup import TaskSetup, encoded_splits, split_rows, with_new_head
from finetune_trainer.tasks.text_classification import load_tokenizer

IGNORE_INDEX = -100


def as_list(cell, *, source: str, row: int, column_name: str) -> list[str]:
    """A list cell: a real list (json, parquet), a JSON list string, or whitespace-separated words (csv)."""
    if isinstance(cell, (list, tuple, np.ndarray)):
        values = list(cell)
    elif isinstance(cell, str) and cell.strip().startswith("["):
        try:
            values = json.loads(cell)
        except json.JSONDecodeError as exc:
            raise InvalidData(f"{source} row {row}: {column_name} is not a JSON list ({exc})") from exc
    elif isinstance(cell, str):
        values = cell.split()
    else:
        raise InvalidData(f"{source} row {row}: {column_name} must be a list of strings; got {cell!r}")
    if not values:
        raise InvalidData(f"{source} row {row}: {column_name} is empty")
    return [str(v) for v in values]


def infer_tags(tag_lists: list[list[str]]) -> list[str]:
    """Sorted distinct tags with "O" first (the usual id 0)."""
    tags = sorted({t for tags in tag_lists for t in tags})
    return (["O"] + [t for t in tags if t != "O"]) if "O" in tags else tags


def align_labels(word_ids: list, tag_ids: list[int]) -> list[int]:
    """One label per subword: the word's tag on its first subword, -100 on the rest and on special tokens."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE_INDEX if word is None or word == previous else tag_ids[word])
        previous = word
    return labels


def entity_metrics(labels: list[str]):
    def compute(eval_pred) -> dict[str, float]:
        predictions, references = np.asarray(eval_pred.predictions), np.asarray(eval_pred.label_ids)
        predicted_tags, reference_tags = [], []
        for p_row, r_row in zip(predictions, references):
            keep = r_row != IGNORE_INDEX
            predicted_tags.append([labels[i] for i in p_row[keep]])
            reference_tags.append([labels[i] for i in r_row[keep]])
        scores = entity_f1(predicted_tags, reference_tags)
        mask = references != IGNORE_INDEX
        return {
            "f1": scores["f1"],
            "precision": scores["precision"],
            "recall": scores["recall"],
            "accuracy": accuracy(predictions[mask], references[mask]),
        }

    return compute


def read_tagged_words(frame, path, tokens_col: str, tags_col: str) -> tuple[list[list[str]], list[list[str]]]:
    """(words, tags) per row of a table, checked: list cells, and one tag per token."""
    name = source_name(path)
    words, tags = [], []
    for row, (w, t) in enumerate(zip(frame[tokens_col], frame[tags_col]), start=1):
        w = as_list(w, source=name, row=row, column_name=tokens_col)
        t = as_list(t, source=name, row=row, column_name=tags_col)
        if len(w) != len(t):
            raise InvalidData(f"{name} row {row}: {len(w)} tokens but {len(t)} tags; give one tag per token")
        words.append(w)
        tags.append(t)
    return words, tags


def load_fast_tokenizer(model_path: str, model_uri: str):
    tokenizer = load_tokenizer(model_path, model_uri)
    # Only fast tokenizers report word_ids(), which align_labels needs.
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidData(
            f"model {model_uri}: token-classification needs a fast tokenizer (tokenizer.json) to align tags to subwords"
        )
    return tokenizer


def encode_tagged_words(tokenizer, words, tags, labels: list[str], *, source: str, max_length: int) -> Dataset:
    """Tokenized words with one label per subword; a tag outside `labels` is an error naming its row."""
    index = {t: i for i, t in enumerate(labels)}
    tag_ids = []
    for row, row_tags in enumerate(tags, start=1):
        unknown = [t for t in row_tags if t not in index]
        if unknown:
            raise InvalidData(f"{source} row {row}: tag {unknown[0]!r} is not one of {', '.join(labels)}")
        tag_ids.append([index[t] for t in row_tags])
    features = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    features["labels"] = [align_labels(features.word_ids(i), ids) for i, ids in enumerate(tag_ids)]
    return Dataset.from_dict(dict(features))


def build(model_path, model_args, data_args, run_args, paths) -> TaskSetup:
    tokens_col, tags_col = column(data_args, "tokens", "tokens"), column(data_args, "tags", "tags")
    train, validation, retention = load_frames(paths, data_args, [tokens_col, tags_col])
    read_table = table_reader(data_args, [tokens_col, tags_col])
    # Train is read first on its own: its tags are the label list when the config gives none.
    train_words, train_tags = read_tagged_words(train, paths.train, tokens_col, tags_col)
    labels = list(data_args.labels) or infer_tags(train_tags)
    tokenizer = load_fast_tokenizer(model_path, model_args.model_uri)

    def encode(frame, path):
        words, tags = (
            (train_words, train_tags) if frame is train else read_tagged_words(frame, path, tokens_col, tags_col)
        )
        return encode_tagged_words(
            tokenizer, words, tags, labels, source=source_name(path), max_length=data_args.max_seq_length
        )

    train_ds, eval_ds, retention_ds = encoded_splits(encode, (train, validation, retention), paths, data_args, run_args)
    model = with_new_head(
        AutoModelForTokenClassification, model_path, classification_config(model_path, model_args, labels)
    )

    return TaskSetup(
        model=model,
        processor=tokenizer,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        retention_dataset=retention_ds,
        evaluation_set=lambda path: encode(read_table(path), path),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        compute_metrics=entity_metrics(labels),
        preprocess_logits_for_metrics=argmax_logits,
        main_metric="f1",
        labels=labels,
        peft_task_type="TOKEN_CLS",
        data_summary=split_rows(train_ds, eval_ds, retention_ds),
    )
