"""Fine-tuning methods: full (every weight trains), lora (peft adapters), freeze (top layers + head)."""

from __future__ import annotations

import logging

import torch
from peft import LoraConfig, TaskType, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TABLE

from finetune_trainer.errors import InvalidData

logger = logging.getLogger("finetune_trainer")

# Attention projections to adapt when peft's table has no entry for an architecture (or its entry
# no longer matches the module names, as for ViT in transformers 5): the first pair the model has.
_QUERY_VALUE_NAMES = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("q", "v"), ("c_attn",), ("qkv",))


def default_lora_targets(model) -> list[str]:
    """LoRA target modules for this architecture: peft's table when it fits, else its query/value projections."""
    model_type = getattr(model.config, "model_type", "")
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    table = PEFT_TABLE.get(model_type)
    if table and set(table) <= leaf_names:
        return list(table)
    for names in _QUERY_VALUE_NAMES:
        if set(names) <= leaf_names:
            return list(names)
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    raise InvalidData(
        f"method lora: no default target modules for model type {model_type!r}; "
        f"set spec.method.lora.targetModules to some of its Linear layers: {', '.join(linear[:20])}"
    )


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def apply_lora(model, model_args, peft_task_type: str | None, head_modules: list[str]):
    targets = list(model_args.lora_target_modules) or default_lora_targets(model)
    config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        task_type=getattr(TaskType, peft_task_type) if peft_task_type else None,
        modules_to_save=list(head_modules) or None,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise InvalidData(f"method lora: target modules {targets} do not fit this model ({exc})") from exc


def block_lists(base) -> list[torch.nn.ModuleList]:
    """The stacks of transformer blocks (ModuleLists of modules with parameters), outermost only."""
    found, inside = [], set()
    for name, module in base.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if (
            isinstance(module, torch.nn.ModuleList)
            and len(module) > 0
            and all(any(True for _ in m.parameters()) for m in module)
        ):
            found.append(module)
            inside.add(name)
    return found


def apply_freeze(model, trainable_layers: int):
    """Freeze the embeddings and every block but the top `trainable_layers` of each stack; the head trains.

    Parameters of the base model that sit above the blocks (pooler, final norm) stay trainable too:
    they feed the head.
    """
    if trainable_layers < 0:
        raise InvalidData(f"freeze_trainable_layers must be >= 0; got {trainable_layers}")
    base = getattr(model, getattr(model, "base_model_prefix", ""), None) or model
    stacks = block_lists(base)
    if not stacks:
        raise InvalidData(
            f"method freeze: found no layer stack in model type {model.config.model_type!r}; use method full or lora"
        )
    in_stacks = {id(p) for stack in stacks for p in stack.parameters()}
    for name, param in base.named_parameters():
        if id(param) in in_stacks:
            param.requires_grad = False
        elif (
            "embed" in name
            or "position" in name
            or "patch" in name
            or "feature_extractor" in name
            or "feature_projection" in name
        ):
            param.requires_grad = False  # input embeddings / feature encoders
    for stack in stacks:
        for block in list(stack)[len(stack) - trainable_layers :] if trainable_layers else []:
            for param in block.parameters():
                param.requires_grad = True
    return model


def apply_method(model, model_args, peft_task_type: str | None, head_modules: list[str]):
    if model_args.method == "lora":
        model = apply_lora(model, model_args, peft_task_type, head_modules)
    elif model_args.method == "freeze":
        model = apply_freeze(model, model_args.freeze_trainable_layers)
    trainable, total = count_parameters(model)
    logger.info(
        "method %s: %d of %d parameters train (%.2f%%)",
        model_args.method,
        trainable,
        total,
        100.0 * trainable / max(total, 1),
    )
    return model
