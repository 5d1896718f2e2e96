"""The model card (README.md) written beside the fine-tuned model."""

from __future__ import annotations


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_model_card(*, model_args, data_args, run_args, metrics: dict, data_summary: dict, labels: list[str]) -> str:
    lines = _header(model_args, run_args)
    lines += _data_section(data_args, run_args, data_summary, labels)
    lines += _method_section(model_args, data_args, run_args, metrics)
    lines += _results_section(metrics)
    lines.append("")
    return "\n".join(lines)


def _header(model_args, run_args) -> list[str]:
    """The Hub's YAML front matter (base model, pipeline, library), the title and where the model came from."""
    title = run_args.job_name or "fine-tuned model"
    return [
        "---",
        f"base_model: {model_args.model_uri}",
        f"pipeline_tag: {model_args.task}",
        "library_name: transformers" if model_args.method != "lora" else "library_name: peft",
        "tags: [finetune-operator]",
        "---",
        "",
        f"# {title}",
        "",
        "Fine-tuned by finetune-operator"
        + (f" (FineTuneJob `{run_args.job_namespace}/{run_args.job_name}`)" if run_args.job_name else "")
        + f" from `{model_args.model_uri}` (revision `{model_args.model_revision}`) for **{model_args.task}**.",
        "",
    ]


def _data_section(data_args, run_args, data_summary: dict, labels: list[str]) -> list[str]:
    lines = [
        "## Data",
        "",
        f"- train: `{data_args.train_uri}` ({data_summary.get('train_rows', '?')} rows, format {data_args.dataset_format})",
    ]
    if data_args.validation_uri:
        lines.append(f"- validation: `{data_args.validation_uri}` ({data_summary.get('validation_rows', '?')} rows)")
    elif data_args.validation_split:
        lines.append(
            f"- validation: {data_args.validation_split:.0%} of train held out ({data_summary.get('validation_rows', '?')} rows, seed {run_args.seed})"
        )
    if data_args.retention_uri:
        lines.append(
            f"- retention (forgetting check): `{data_args.retention_uri}` ({data_summary.get('retention_rows', '?')} rows)"
        )
    test_rows = data_summary.get("test_rows") or {}
    for name, uri in data_args.test_uris.items():
        lines.append(f"- test `{name}` (held out, evaluated after training): `{uri}` ({test_rows.get(name, '?')} rows)")
    if labels:
        lines.append(f"- labels: {', '.join(labels)}")
    return lines


def _method_section(model_args, data_args, run_args, metrics: dict) -> list[str]:
    method = model_args.method
    if method == "lora":
        method += f" (r={model_args.lora_r}, alpha={model_args.lora_alpha}, dropout={model_args.lora_dropout}, targets={metrics.get('lora_target_modules')})"
    elif method == "freeze":
        method += f" (top {model_args.freeze_trainable_layers} layers and the head train)"
    return [
        "",
        "## Method and hyperparameters",
        "",
        f"- method: {method}",
        f"- trainable parameters: {metrics.get('trainable_parameters')} of {metrics.get('total_parameters')}",
        f"- learning rate {run_args.learning_rate}, batch size {run_args.batch_size} x {run_args.gradient_accumulation_steps} accumulation, "
        + (f"max steps {run_args.max_steps}" if run_args.max_steps else f"epochs {run_args.epochs}"),
        f"- warmup ratio {run_args.warmup_ratio}, weight decay {run_args.weight_decay}, label smoothing {run_args.label_smoothing}, "
        f"dropout {model_args.dropout if model_args.dropout is not None else 'as the base model'}",
        f"- precision {metrics.get('precision')}, seed {run_args.seed}, max sequence length {data_args.max_seq_length}",
    ]


def _results_section(metrics: dict) -> list[str]:
    return (
        ["", "## Results", ""]
        + _eval_table(metrics)
        + _test_table(metrics)
        + _retention_table(metrics)
        + _training_lines(metrics)
    )


def _eval_table(metrics: dict) -> list[str]:
    """Each eval metric after training beside its value before (`eval_*_before`); timings left out."""
    lines = [
        "Evaluation set, before fine-tuning and after:",
        "",
        "| metric | before | after |",
        "|---|---|---|",
    ]
    for key in sorted(metrics):
        if (
            key.startswith("eval_")
            and not key.endswith(("_before", "_runtime", "_per_second"))
            and isinstance(metrics[key], (int, float))
        ):
            before = metrics.get(f"{key}_before")
            lines.append(
                f"| {key.removeprefix('eval_')} | {_fmt(before) if before is not None else '-'} | {_fmt(metrics[key])} |"
            )
    return lines


def _test_table(metrics: dict) -> list[str]:
    """Each held-out test set's metrics after training (test_<name>_<metric>), only when the run had test sets."""
    tests = sorted(k for k in metrics if k.startswith("test_") and isinstance(metrics[k], (int, float)))
    if not tests:
        return []
    return [
        "",
        "Held-out test sets, after fine-tuning:",
        "",
        "| metric | after |",
        "|---|---|",
        *(f"| {key.removeprefix('test_')} | {_fmt(metrics[key])} |" for key in tests),
    ]


def _retention_table(metrics: dict) -> list[str]:
    """The forgetting check, only when the run had a retention set."""
    retention = sorted(k for k in metrics if k.startswith("retention_") and k.endswith("_before"))
    if not retention:
        return []
    lines = [
        "",
        "Retention set (forgetting: after minus before; a higher loss after means forgetting):",
        "",
        "| metric | before | after | delta |",
        "|---|---|---|---|",
    ]
    for key in retention:
        name = key.removeprefix("retention_").removesuffix("_before")
        after, delta = metrics.get(f"retention_{name}_after"), metrics.get(f"retention_{name}_delta")
        lines.append(
            f"| {name} | {_fmt(metrics[key])} | {_fmt(after) if after is not None else '-'} | {_fmt(delta) if delta is not None else '-'} |"
        )
    return lines


def _training_lines(metrics: dict) -> list[str]:
    lines = ["", "Training:", ""]
    for key in ("train_loss", "train_runtime", "train_samples_per_second", "global_step", "epoch"):
        if key in metrics:
            lines.append(f"- {key}: {_fmt(metrics[key])}")
    return lines
