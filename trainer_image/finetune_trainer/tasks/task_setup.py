"""What run.py hands a task module (DataPaths) and what the task module hands back (TaskSetup)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass
class DataPaths:
    """Local paths of the data named by the config (already fetched)."""

    train: str
    validation: Optional[str] = None
    retention: Optional[str] = None


@dataclass
class TaskSetup:
    model: Any
    processor: Any  # tokenizer, image processor or feature extractor; saved beside the model
    train_dataset: Any
    eval_dataset: Any = None
    retention_dataset: Any = None
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
