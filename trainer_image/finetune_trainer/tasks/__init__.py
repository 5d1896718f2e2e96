"""One module per task; each builds a TaskSetup (model, processor, datasets, collator, metrics).

`build_task` dispatches on ModelArguments.task and imports only the module it needs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

_MODULES = {
    "text-classification": "text_classification",
    "token-classification": "token_classification",
    "causal-lm": "causal_lm",
    "seq2seq": "seq2seq",
    "image-classification": "image_classification",
    "audio-classification": "audio_classification",
    "speech-recognition": "speech_recognition",
}


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


def build_task(task: str, model_path: str, model_args, data_args, run_args, paths: DataPaths) -> TaskSetup:
    module = importlib.import_module(f"finetune_trainer.tasks.{_MODULES[task]}")
    return module.build(model_path, model_args, data_args, run_args, paths)
