"""causal-lm: plain `text`, or `prompt`/`response` pairs with the loss only on the response; perplexity."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from finetune_trainer.errors import InvalidData
from finetune_trainer.eval_metrics import perplexity
from finetune_trainer.tables import check_no_blanks, load_table, source_name
from finetune_trainer.tasks.common import load_frames, load_model_config, table_reader
from finetune_trainer.tasks.task_setup import TaskSetup, encoded_splits, split_rows
from finetune_trainer.tasks.text_classification import load_tokenizer

IGNORE_INDEX = -100


def pair_mode(columns: dict, frame_columns) -> bool:
    """prompt/response pairs when the config names them, or when the data has them and no text column."""
    if "prompt" in columns or "response" in columns:
        return True
    if "text" in columns:
        return False
    return "text" not in frame_columns and "prompt" in frame_columns and "response" in frame_columns


def encode_pair(prompt_ids: list[int], response_ids: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels): the prompt is context only (labels -100), the response is learned. Pure."""
    ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return ids, labels


def pad_batch(features: list[dict], pad_token_id: int) -> dict:
    """Right-pad input_ids (pad id), attention_mask (0) and labels (-100) to the longest example."""
    longest = max(len(f["input_ids"]) for f in features)
    batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for f in features:
        gap = longest - len(f["input_ids"])
        batch["input_ids"].append(list(f["input_ids"]) + [pad_token_id] * gap)
        batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * gap)
        batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * gap)
    return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def derive_perplexity(metrics: dict, prefix: str) -> dict:
    loss = metrics.get(f"{prefix}_loss")
    return {f"{prefix}_perplexity": perplexity(loss)} if loss is not None else {}


def text_columns(data_args, paths) -> dict[str, str]:
    """The columns to read, by role: {"prompt", "response"} for pairs, else {"text"}.

    Pair mode may depend on the data itself, so the train file is read once here for its columns.
    """
    probe = load_table(paths.train, data_args.dataset_format, [], name=source_name(paths.train))
    if pair_mode(data_args.columns, probe.columns):
        return {
            "prompt": data_args.columns.get("prompt", "prompt"),
            "response": data_args.columns.get("response", "response"),
        }
    return {"text": data_args.columns.get("text", "text")}


def load_padding_tokenizer(model_path: str, model_uri: str):
    tokenizer = load_tokenizer(model_path, model_uri)
    if tokenizer.pad_token_id is None:
        # GPT-2-style tokenizers have no pad token; padding positions are masked out anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode_examples(tokenizer, frame, columns: dict[str, str], *, source: str, max_length: int) -> Dataset:
    """input_ids and labels of every row, each ending in EOS (when the tokenizer has one) and cut to max_length."""
    for c in columns.values():
        check_no_blanks(frame, c, source)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    rows = {"input_ids": [], "labels": []}
    if "prompt" in columns:
        prompts = tokenizer([str(p) for p in frame[columns["prompt"]]], add_special_tokens=False)["input_ids"]
        responses = tokenizer([str(r) for r in frame[columns["response"]]], add_special_tokens=False)["input_ids"]
        for row, (p, r) in enumerate(zip(prompts, responses), start=1):
            if len(p) >= max_length:
                raise InvalidData(
                    f"{source} row {row}: the prompt fills all {max_length} tokens of max_seq_length, so no response is learned; raise max_seq_length or shorten it"
                )
            ids, labels = encode_pair(p, r + eos, max_length)
            rows["input_ids"].append(ids)
            rows["labels"].append(labels)
    else:
        for ids in tokenizer([str(t) for t in frame[columns["text"]]], add_special_tokens=False)["input_ids"]:
            ids = (ids + eos)[:max_length]
            rows["input_ids"].append(ids)
            rows["labels"].append(list(ids))
    return Dataset.from_dict(rows)


def build(model_path, model_args, data_args, run_args, paths) -> TaskSetup:
    columns = text_columns(data_args, paths)
    pairs = "prompt" in columns
    train, validation, retention = load_frames(paths, data_args, list(columns.values()))
    read_table = table_reader(data_args, list(columns.values()))
    tokenizer = load_padding_tokenizer(model_path, model_args.model_uri)

    def encode(frame, path):
        return encode_examples(tokenizer, frame, columns, source=source_name(path), max_length=data_args.max_seq_length)

    train_ds, eval_ds, retention_ds = encoded_splits(encode, (train, validation, retention), paths, data_args, run_args)

    config = load_model_config(model_path, model_args)
    model = AutoModelForCausalLM.from_pretrained(model_path, config=config, local_files_only=True)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "loss_type", None) is None:
        # transformers names a loss by the class name, and GPT-2's (GPT2LMHeadModel) names none: its loss falls
        # back to ForCausalLM, which shifts the labels, but the Trainer then counts a step's tokens unshifted,
        # one per row too many, and every loss (and gradient) of the run came out too small (2.58 for 2.99).
        model.loss_type = "ForCausalLM"

    return TaskSetup(
        model=model,
        processor=tokenizer,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        retention_dataset=retention_ds,
        evaluation_set=lambda path: encode(read_table(path), path),
        data_collator=lambda features: pad_batch(features, tokenizer.pad_token_id),
        main_metric="perplexity",
        peft_task_type="CAUSAL_LM",
        derive_metrics=derive_perplexity,
        data_summary={
            **split_rows(train_ds, eval_ds, retention_ds),
            "format": "prompt/response" if pairs else "text",
        },
    )
