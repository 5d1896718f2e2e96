"""What run.py hands a task module (DataPaths) and what the task module hands back (TaskSetup).

Also pieces the tasks' `build` functions share on the way from one to the other: the train / eval /
retention datasets of a tokenized task, a model with a freshly sized head, and the rows per split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from finetune_trainer.tasks.common import split_off_validation


@dataclass
class DataPaths:
    """Local paths of the data named by the config (already fetched)."""

    train: str
    validation: Optional[str] = None
    retention: Optional[str] = None
    tests: dict = field(default_factory=dict)  # test set name -> local path


@dataclass
class TaskSetup:
    model: Any
    processor: Any  # tokenizer, image processor or feature extractor; saved beside the model
    train_dataset: Any
    eval_dataset: Any = None
    retention_dataset: Any = None
    # A held-out data file (local path) -> a dataset read and encoded as the validation set is (for dataset.test).
    evaluation_set: Optional[Callable[[str], Any]] = None
    data_collator: Optional[Callable] = None
    compute_metrics: Optional[Callable] = None
    preprocess_logits_for_metrics: Optional[Callable] = None
    main_metric: str = "loss"  # the headline eval metric, without the eval_ prefix
    labels: list[str] = field(default_factory=list)
    peft_task_type: Optional[str] = None  # peft TaskType name, or None for a custom head
    head_modules: list[str] = field(default_factory=list)  # trained in full under LoRA (modules_to_save)
    trainer_class: Any = None  # default transformers.Trainer
    arguments_class: Any = None  # default transformers.TrainingArguments
    extra_training_arguments: dict = field(default_factory=dict)
    data_summary: dict = field(default_factory=dict)  # rows per split etc., for metrics.json and the model card
    # Metrics derived from a plain eval loss (e.g. perplexity for language models), applied to every evaluation.
    derive_metrics: Optional[Callable[[dict, str], dict]] = None


def encoded_splits(encode, frames, paths: DataPaths, data_args, run_args):
    """(train, eval, retention) datasets of a tokenized task from its (train, validation, retention) frames.

    `encode(frame, path)` builds one. Train is encoded whole before a validation_split holds rows out of
    it, so both parts share one tokenization; otherwise the eval set is the validation frame (or None).
    """
    train, validation, retention = frames
    full_train = encode(train, paths.train)
    keep, held = split_off_validation(len(full_train), data_args, run_args)
    train_ds = full_train.select(keep) if held else full_train
    if held:
        eval_ds = full_train.select(held)
    else:
        eval_ds = encode(validation, paths.validation) if validation is not None else None
    retention_ds = encode(retention, paths.retention) if retention is not None else None
    return train_ds, eval_ds, retention_ds


def with_new_head(auto_class, model_path: str, config):
    """The base model under `auto_class` with an output layer sized by `config`.

    ignore_mismatched_sizes: a base model fine-tuned for another label set (or vocabulary) gets a fresh
    head instead of failing to load.
    """
    return auto_class.from_pretrained(model_path, config=config, ignore_mismatched_sizes=True, local_files_only=True)


def split_rows(train_dataset, eval_dataset, retention_dataset) -> dict[str, int]:
    """Rows per split, the part of data_summary every task has (0 for a split the run does not have)."""
    return {
        "train_rows": len(train_dataset),
        "validation_rows": len(eval_dataset) if eval_dataset is not None else 0,
        "retention_rows": len(retention_dataset) if retention_dataset is not None else 0,
    }
