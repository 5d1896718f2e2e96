"""Render the trainer's JSON configuration from a FineTuneJob spec (pure).

The keys are the fields of finetune_trainer.arguments (ModelArguments, DataArguments, RunArguments);
the trainer rejects unknown keys, and tests/trainer/test_contract.py parses every rendered sample there.
Secrets never appear here: the trainer reads them from env vars that reference Secrets.
"""

from __future__ import annotations

from typing import Any

from ..spec import FineTuneJobSpec
from ..spec.sections import FreezeSettings, LoraSettings


def render_trainer_config(spec: FineTuneJobSpec, name: str, namespace: str) -> dict[str, Any]:
    hp = spec.hyperparameters
    reg = spec.regularization
    method = spec.method
    lora = method.lora
    early = reg.early_stopping
    config: dict[str, Any] = {
        # ModelArguments
        "task": spec.task,
        "model_uri": spec.model.source,
        "model_revision": spec.model.revision,
        "method": method.type,
        "dropout": reg.dropout,
        # DataArguments
        "train_uri": spec.dataset.train,
        "validation_uri": spec.dataset.validation,
        "validation_split": spec.dataset.validation_split,
        "retention_uri": spec.dataset.retention,
        "test_uris": dict(spec.dataset.test),
        "dataset_format": spec.dataset.format,
        "columns": dict(spec.dataset.columns),
        "labels": list(spec.dataset.labels),
        "max_seq_length": hp.max_seq_length,
        "max_train_samples": spec.dataset.max_train_samples,
        "augment": reg.augmentation.enabled,
        "token_dropout": reg.augmentation.token_dropout,
        # RunArguments
        "output_uri": spec.output.uri,
        "checkpoint_steps": spec.output.checkpoint_steps,
        "checkpoints_to_keep": spec.output.checkpoints_to_keep,
        "learning_rate": hp.learning_rate,
        "epochs": hp.epochs,
        "max_steps": hp.max_steps,
        "batch_size": hp.batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "warmup_ratio": hp.warmup_ratio,
        "weight_decay": hp.weight_decay,
        "label_smoothing": reg.label_smoothing,
        "precision": hp.precision,
        "seed": hp.seed,
        "eval_strategy": hp.eval_strategy,
        "eval_steps": hp.eval_steps,
        "early_stopping_metric": early.metric if early else None,
        "early_stopping_patience": early.patience if early else 3,
        "early_stopping_greater_is_better": early.greater_is_better if early else None,
        "job_name": name,
        "job_namespace": namespace,
    }
    if method.type == "lora":
        lora = lora or LoraSettings()
        config.update(
            lora_r=lora.r,
            lora_alpha=float(lora.alpha),
            lora_dropout=lora.dropout,
            lora_target_modules=list(lora.target_modules),
            merge_adapter=lora.merge_adapter,
        )
    if method.type == "freeze":
        config["freeze_trainable_layers"] = (method.freeze or FreezeSettings()).trainable_layers
    return config
