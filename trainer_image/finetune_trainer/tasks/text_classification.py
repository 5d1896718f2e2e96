"""text-classification: one text (or a text pair) -> one label; metrics accuracy and macro-F1."""

from __future__ import annotations

import numpy as np
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from finetune_trainer.augment import TokenDropoutDataset
from finetune_trainer.errors import InvalidData
from finetune_trainer.eval_metrics import accuracy, macro_f1
from finetune_trainer.labels import encode_labels, infer_labels
from finetune_trainer.tables import check_no_blanks, source_name
from finetune_trainer.tasks.common import argmax_logits, classification_config, column, load_frames, table_reader
from finetune_trainer.tasks.task_setup import TaskSetup, encoded_splits, split_rows, with_new_head


def load_tokenizer(model_path: str, model_uri: str):
    try:
        return AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidData(f"model {model_uri}: no tokenizer files in {model_path} ({exc})") from exc


def classification_metrics(num_labels: int):
    def compute(eval_pred) -> dict[str, float]:
        predictions = np.asarray(eval_pred.predictions)
        references = np.asarray(eval_pred.label_ids)
        return {
            "accuracy": accuracy(predictions, references),
            "f1_macro": macro_f1(predictions, references, num_labels),
        }

    return compute


def build(model_path, model_args, data_args, run_args, paths) -> TaskSetup:
    text_col = column(data_args, "text", "text")
    pair_col = data_args.columns.get("textPair")
    label_col = column(data_args, "label", "label")
    required = [text_col, label_col] + ([pair_col] if pair_col else [])
    train, validation, retention = load_frames(paths, data_args, required)
    read_table = table_reader(data_args, required)

    # Labels: the configured list, else the sorted distinct labels of the training data.
    labels = list(data_args.labels) or infer_labels(train[label_col])
    if len(labels) < 2:
        raise InvalidData(
            f"{source_name(paths.train)}: column {label_col!r} has only the label {labels}; a classifier needs at least 2"
        )

    tokenizer = load_tokenizer(model_path, model_args.model_uri)

    def encode(frame, path):
        name = source_name(path)
        check_no_blanks(frame, text_col, name)
        ids = encode_labels(list(frame[label_col]), labels, source=name, column=label_col)
        texts = [str(t) for t in frame[text_col]]
        pairs = [str(t) for t in frame[pair_col]] if pair_col else None
        features = tokenizer(texts, pairs, truncation=True, max_length=data_args.max_seq_length)
        return Dataset.from_dict({**features, "labels": ids})

    train_ds, eval_ds, retention_ds = encoded_splits(encode, (train, validation, retention), paths, data_args, run_args)
    model = with_new_head(
        AutoModelForSequenceClassification, model_path, classification_config(model_path, model_args, labels)
    )

    train_dataset = train_ds
    if data_args.augment and data_args.token_dropout > 0:
        train_dataset = TokenDropoutDataset(train_ds, tokenizer, data_args.token_dropout, seed=run_args.seed)

    return TaskSetup(
        model=model,
        processor=tokenizer,
        train_dataset=train_dataset,
        eval_dataset=eval_ds,
        retention_dataset=retention_ds,
        evaluation_set=lambda path: encode(read_table(path), path),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=classification_metrics(len(labels)),
        preprocess_logits_for_metrics=argmax_logits,
        main_metric="accuracy",
        labels=labels,
        peft_task_type="SEQ_CLS",
        head_modules=[],  # peft keeps the classifier trainable for SEQ_CLS by itself
        data_summary={
            **split_rows(train_ds, eval_ds, retention_ds),
            "columns": {"text": text_col, "label": label_col, **({"textPair": pair_col} if pair_col else {})},
        },
    )
