"""What a checkpoint upload costs training: step time while one runs against step time without, same run.

Our trainer (`finetune_trainer.main`, in-process, CPU) fine-tunes a BERT built from a config (a few MB by
default) with an s3:// output on the moto server (a real S3 API in a process of its own on loopback,
tests/s3_server.py). Every checkpoint is uploaded by the trainer's background thread while training goes on
(checkpoint_store.py). Each optimizer step is timed from Trainer's on_step_begin to on_step_end, which leaves
out the save itself (it comes after on_step_end and blocks in any design); a step counts as "during an
upload" when it lies wholly inside one of the uploader's recorded upload intervals, and as "without" when
it touches none. The first steps (warm-up) count as neither.

Printed last: the mean step time during uploads over the mean without, as a ratio. Nothing is asserted
(exit 0) unless a run fails or no step fell during an upload (exit 1: make the model or --steps bigger).

A real store runs on other machines; here its server shares this machine's cores with training, so by
default it runs at the lowest CPU priority (--server-nice 19) and the ratio is mostly the trainer's own cost:
its upload thread reading, hashing and sending the files beside the training threads. --server-nice 0 shows
what a server competing for the same cores adds.

    python bench/checkpoint_upload.py [--steps 400] [--checkpoint-steps 100] [--hidden 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "trainer"), str(ROOT / "trainer_image")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FINETUNE_METRICS_PORT", "0")  # no /metrics port for an in-process run

from s3_server import s3_server  # noqa: E402
from trainer_data import SPECIAL, WORDS, sentiment_rows, write_csv  # noqa: E402

WARM_UP_STEPS = 5


@dataclass(frozen=True)
class Split:
    during: list[float]  # seconds of the steps wholly inside an upload
    without: list[float]  # seconds of the steps that touch no upload


def split_steps(steps: list[tuple[float, float]], uploads: list[tuple[float, float]], warm_up: int) -> Split:
    """Sort (begin, end) step intervals by the (started, finished) upload intervals; steps that overlap an
    upload only in part, and the first `warm_up`, go in neither. Pure."""
    during, without = [], []
    for begin, end in steps[warm_up:]:
        if any(started <= begin and end <= finished for started, finished in uploads):
            during.append(end - begin)
        elif not any(begin < finished and started < end for started, finished in uploads):
            without.append(end - begin)
    return Split(during, without)


def write_model(folder: Path, hidden: int, layers: int) -> int:
    """A BERT classifier of the given size with a word-level tokenizer; returns its parameter count."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        max_position_embeddings=64,
        num_labels=2,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def timed_run(config: dict, folder: Path) -> tuple[int, list[tuple[float, float]], object]:
    """Run the trainer in-process; (exit code, (begin, end) of every step, the run's CheckpointUploader)."""
    import finetune_trainer.run as run
    from finetune_trainer import main
    from transformers import TrainerCallback

    steps: list[tuple[float, float]] = []
    seen: dict[str, object] = {}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.begin = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            steps.append((self.begin, time.monotonic()))

    assembled = run.assemble_callbacks

    def with_timer(*args):
        seen["uploader"] = args[3]  # assemble_callbacks(run_args, checkpoints_dir, stop, uploader)
        return [StepTimer()] + assembled(*args)

    run.assemble_callbacks = with_timer
    try:
        path = folder / "config.json"
        path.write_text(json.dumps(config))
        code = main(str(path))
    finally:
        run.assemble_callbacks = assembled
    return code, steps, seen.get("uploader")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--checkpoint-steps", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=256, help="BERT hidden size (256: about 3M parameters)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2, help="small: many steps during each upload")
    parser.add_argument(
        "--server-nice",
        type=int,
        default=19,
        help="niceness of the store's server process (19: it yields the cores to training, as a store on another "
        "machine would; 0: it competes for them)",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-upload-") as tmp, s3_server(tmp) as s3:
        folder = Path(tmp)
        parameters = write_model(folder / "model", args.hidden, args.layers)
        train = write_csv(folder / "train.csv", sentiment_rows(512, seed=1))
        bucket = s3.make_bucket("bench-checkpoints")
        os.setpriority(os.PRIO_PROCESS, s3.process.pid, args.server_nice)
        os.environ.update(s3.env())
        (folder / "disk").mkdir()
        tempfile.tempdir = str(folder / "disk")  # the pod's local disk, where an s3:// output is staged
        config = dict(
            task="text-classification",
            model_uri=str(folder / "model"),
            train_uri=train,
            output_uri=f"s3://{bucket}/job",
            max_steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=5e-4,
            checkpoint_steps=args.checkpoint_steps,
            checkpoints_to_keep=2,
            eval_strategy="no",
            max_seq_length=32,
            logging_steps=10**6,
        )
        code, steps, uploader = timed_run(config, folder)
        if code != 0 or uploader is None:
            print(f"the run failed (exit {code})", file=sys.stderr)
            return 1
        records = [r for r in uploader.history if r.error is None]
        split = split_steps(steps, [(r.started, r.finished) for r in records], WARM_UP_STEPS)
        stored = len([k for k in s3.keys(bucket, "job/checkpoints/") if k.endswith("/COMPLETE")])

    if not split.during or not split.without:
        print(f"no step fell {'during' if not split.during else 'outside'} an upload; use a bigger model or --steps")
        return 1
    size = statistics.mean(r.bytes for r in records) / 1e6
    seconds = statistics.mean(r.finished - r.started for r in records)
    during, without = statistics.mean(split.during), statistics.mean(split.without)
    print(
        f"model {parameters / 1e6:.1f}M parameters, {args.steps} steps, a checkpoint every {args.checkpoint_steps}: "
        f"{len(records)} uploads of {size:.1f} MB, {seconds:.2f} s each ({size / seconds:.0f} MB/s), "
        f"{len(uploader.skipped)} skipped, {stored} in the store at the end"
    )
    # What the uploads cost training in all, against what the same uploads would cost done in the training
    # loop (training waits for each): the overlap is worth it while the first is the smaller.
    extra = (sum(split.during) - len(split.during) * without) / len(records)
    print(
        f"median step time during an upload {statistics.median(split.during) * 1e3:.1f} ms, "
        f"without {statistics.median(split.without) * 1e3:.1f} ms; steps slowed by {extra:.2f} s an upload, "
        f"against {seconds:.2f} s an upload blocking training would cost"
    )
    print(
        f"checkpoint upload: mean step time during an upload {during * 1e3:.1f} ms ({len(split.during)} steps), "
        f"without {without * 1e3:.1f} ms ({len(split.without)} steps), ratio during/without: {during / without:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
