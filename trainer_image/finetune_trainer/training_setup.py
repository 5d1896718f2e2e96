"""From RunArguments to transformers.TrainingArguments (pure apart from the final constructor)."""

from __future__ import annotations

import os

from finetune_trainer.errors import InvalidData
from finetune_trainer.eval_metrics import lower_is_better


def choose_precision(requested: str, cuda_available: bool, bf16_supported: bool) -> tuple[str, str]:
    """(bf16 | fp16 | fp32, why). Half precision only where the GPU supports it; CPUs train in fp32."""
    if requested == "fp32":
        return "fp32", "fp32 requested"
    if not cuda_available:
        if requested in ("bf16", "fp16"):
            return "fp32", f"{requested} requested but no CUDA device is available; training in fp32"
        return "fp32", "no CUDA device; training in fp32"
    if requested == "bf16" and not bf16_supported:
        return "fp16", "bf16 requested but this GPU does not support it; using fp16"
    if requested == "auto":
        return (
            ("bf16", "auto: the GPU supports bf16")
            if bf16_supported
            else ("fp16", "auto: GPU without bf16; using fp16")
        )
    return requested, f"{requested} requested"


def best_metric_name(metric: str) -> str:
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def training_arguments_kwargs(run_args, *, checkpoints_dir: str, precision: str, has_eval: bool, use_cpu: bool) -> dict:
    """Keyword arguments for TrainingArguments; raises InvalidData for combinations that cannot work."""
    if not 0.0 <= run_args.warmup_ratio < 1.0:
        raise InvalidData(f"warmup_ratio must be in [0, 1); got {run_args.warmup_ratio}")
    if run_args.checkpoint_steps < 1:
        raise InvalidData(f"checkpoint_steps must be >= 1; got {run_args.checkpoint_steps}")
    eval_strategy = run_args.eval_strategy if has_eval else "no"
    early_stopping = run_args.early_stopping_metric is not None
    if early_stopping and eval_strategy == "no":
        raise InvalidData(
            "early_stopping_metric needs evaluation: give validation_uri or validation_split and an eval_strategy of epoch or steps"
        )
    if eval_strategy == "steps" and not run_args.eval_steps:
        raise InvalidData("eval_strategy steps needs eval_steps (e.g. 100)")
    kwargs = dict(
        output_dir=checkpoints_dir,
        per_device_train_batch_size=run_args.batch_size,
        per_device_eval_batch_size=run_args.batch_size,
        gradient_accumulation_steps=run_args.gradient_accumulation_steps,
        learning_rate=run_args.learning_rate,
        num_train_epochs=run_args.epochs,
        max_steps=run_args.max_steps if run_args.max_steps else -1,
        # A float in [0, 1) is a fraction of the total steps in transformers >= 5.
        warmup_steps=float(run_args.warmup_ratio),
        weight_decay=run_args.weight_decay,
        label_smoothing_factor=run_args.label_smoothing,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=use_cpu,
        seed=run_args.seed,
        eval_strategy=eval_strategy,
        eval_steps=run_args.eval_steps if eval_strategy == "steps" else None,
        logging_strategy="steps",
        logging_steps=run_args.logging_steps,
        save_strategy="steps",
        save_steps=run_args.checkpoint_steps,
        # Rotation is CompleteCheckpointCallback's job (see checkpoints.py).
        save_total_limit=None,
        report_to=[],
        # Real tokens (not padding) per second for progress reports and /metrics: one small reduction
        # per step. Not across CPU processes: that gather aborted under gloo (tests/trainer/test_launcher.py).
        include_num_input_tokens_seen="no" if use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else "non_padding",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if early_stopping:
        metric = best_metric_name(run_args.early_stopping_metric)
        greater = run_args.early_stopping_greater_is_better
        # load_best_model_at_end needs checkpoints at the evaluation points: save when we evaluate.
        kwargs.update(
            load_best_model_at_end=True,
            metric_for_best_model=metric,
            greater_is_better=(not lower_is_better(metric)) if greater is None else greater,
            save_strategy=eval_strategy,
            save_steps=run_args.eval_steps if eval_strategy == "steps" else run_args.checkpoint_steps,
        )
    return kwargs
