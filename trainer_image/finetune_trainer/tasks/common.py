"""Pieces shared by the task modules: config loading with overrides, splits, columns."""

from __future__ import annotations

import logging

from transformers import AutoConfig

from finetune_trainer.errors import InvalidData
from finetune_trainer.tables import load_table, source_name, split_train_validation

logger = logging.getLogger("finetune_trainer")


def dropout_overrides(config: dict, probability: float) -> dict:
    """Every `*dropout*` probability of a model config set to `probability` (pure)."""
    if not 0.0 <= probability < 1.0:
        raise InvalidData(f"dropout must be in [0, 1); got {probability}")
    return {
        key: probability
        for key, value in config.items()
        if "dropout" in key and (value is None or (isinstance(value, float) and not isinstance(value, bool)))
    }


def load_model_config(model_path: str, model_args, **overrides):
    """AutoConfig of the base model, with the dropout override and task-specific fields applied."""
    try:
        config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InvalidData(f"model {model_args.model_uri}: no usable config.json in {model_path} ({exc})") from exc
    if model_args.dropout is not None:
        changed = dropout_overrides(config.to_dict(), model_args.dropout)
        logger.info("dropout override %.3f on %s", model_args.dropout, ", ".join(sorted(changed)) or "nothing")
        overrides = {**changed, **overrides}
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def column(data_args, role: str, default: str) -> str:
    return data_args.columns.get(role) or default


def load_frames(paths, data_args, required: list[str]):
    """(train, validation or None, retention or None) tables, each checked for rows and required columns.

    A validation_split is applied later by `split_off_validation`, after the task has checked the
    rows, so that errors name rows of the file as written.
    """
    fmt = data_args.dataset_format
    train = load_table(paths.train, fmt, required, name=source_name(paths.train))
    if data_args.max_train_samples:
        train = train.iloc[: data_args.max_train_samples].reset_index(drop=True)
    validation = (
        load_table(paths.validation, fmt, required, name=source_name(paths.validation)) if paths.validation else None
    )
    retention = (
        load_table(paths.retention, fmt, required, name=source_name(paths.retention)) if paths.retention else None
    )
    return train, validation, retention


def table_reader(data_args, required: list[str]):
    """path -> its table, checked for rows and required columns as the validation table is (for test sets)."""
    return lambda path: load_table(path, data_args.dataset_format, required, name=source_name(path))


def split_off_validation(n_rows: int, data_args, run_args) -> tuple[list[int], list[int] | None]:
    """(train row indices, validation row indices or None) for validation_split (seeded)."""
    if not data_args.validation_split:
        return list(range(n_rows)), None
    return split_train_validation(n_rows, data_args.validation_split, run_args.seed)


def split_datasets(dataset, frames, paths, data_args, run_args):
    """(train, eval, retention) datasets of a media task from its (train, validation, retention) frames.

    `dataset(frame, path, rows, train_mode)` builds one; the eval set is the held-out part of train when
    validation_split is given, else the validation frame (or None); augmentation is for train_mode only.
    """
    train, validation, retention = frames
    keep, held = split_off_validation(len(train), data_args, run_args)
    train_ds = dataset(train, paths.train, keep, True)
    if held:
        eval_ds = dataset(train, paths.train, held, False)
    else:
        eval_ds = (
            dataset(validation, paths.validation, list(range(len(validation))), False)
            if validation is not None
            else None
        )
    retention_ds = (
        dataset(retention, paths.retention, list(range(len(retention))), False) if retention is not None else None
    )
    return train_ds, eval_ds, retention_ds


def whole_dataset(dataset, frame, path):
    """Every row of `frame` as an evaluation dataset of a media task (`dataset` as in split_datasets)."""
    return dataset(frame, path, list(range(len(frame))), False)


def classification_config(model_path: str, model_args, labels: list[str]):
    """The model config of a classifier over `labels` (ids in list order), with the run's dropout override."""
    return load_model_config(
        model_path,
        model_args,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )


def argmax_logits(logits, labels):
    """preprocess_logits_for_metrics: keep only predicted ids, so evaluation does not hold all logits."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)
