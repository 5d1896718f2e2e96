"""Search benchmark: the shipped hyperparameter-search sample against the shipped default sample, on CPU.

One sandbox run (API server, scheduler, Job controller, process kubelet, the real operator, real trainer
processes): `manifests/samples/sentiment-minilm.yaml` (the default hyperparameters) runs first, alone, then
`manifests/samples/sentiment-minilm-search.yaml` (8 Bayesian trials, 2 at a time, median early stopping),
on the real all-MiniLM-L6-v2 weights and the shipped sentiment data, put on the sandbox's PVCs by the
demo's own functions. Then, in this process:

1. Quality: the search's promoted model and the default job's model are evaluated with transformers on the
   held-out `test.csv` beside the sentiment data (accuracy and mean cross-entropy), next to the validation
   eval_loss each job reports in its status. Target: test loss of the search's model <= the default's
   (accuracy is 1.000 for both on this data, so it cannot rank them; loss is what the search minimises).
2. Early stopping: for each EarlyStopped trial, (totalSteps - step) x seconds per step, the rate measured
   on the succeeded trials of the same batch size (their train_runtime / totalSteps); against the trials'
   total time. GPU-seconds are 0 here: every trial ran on CPU.
3. Wall time of each job, apply -> terminal phase.

The summary line ends with the ratio default/search of test loss (>= 1 meets the target; exit 1 otherwise).
Run: python bench/search_quality.py [--epochs N] (--smoke: tiny model, 2 trials, for the test suite)
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "manifests" / "samples"
DEFAULT_SAMPLE = SAMPLES / "sentiment-minilm.yaml"
SEARCH_SAMPLE = SAMPLES / "sentiment-minilm-search.yaml"
TEXT_COLUMN, LABEL_COLUMN = "sentence", "label"


# --- pure helpers ---------------------------------------------------------------------------------


def seconds_between(start: str | None, end: str | None) -> float | None:
    from finetune_operator.status import parse_timestamp

    begun, ended = parse_timestamp(start), parse_timestamp(end)
    return (ended - begun).total_seconds() if begun and ended else None


def with_epochs(manifest: dict[str, Any], epochs: float | None) -> dict[str, Any]:
    """A copy of `manifest` training for `epochs` (None: as written)."""
    out = copy.deepcopy(manifest)
    if epochs is not None:
        out["spec"]["hyperparameters"]["epochs"] = epochs
    return out


def smoke_variant(manifest: dict[str, Any]) -> dict[str, Any]:
    """The sample shrunk for the test suite: the tiny BERT, short sequences, a 2-trial search."""
    out = copy.deepcopy(manifest)
    spec = out["spec"]
    spec["model"]["source"] = "pvc://models/tiny-bert"
    spec["hyperparameters"].update(epochs=1, maxSeqLength=16)
    spec["resources"].update(cpu="1", memory="2Gi")
    search = spec.get("hyperparameterSearch")
    if search is not None:
        spec["hyperparameters"].update(evalSteps=2)
        search.update(maxTrials=2, parallelTrials=2)
        search["earlyStopping"].update(minSteps=2)
        search["parameters"]["batchSize"] = {"values": [8, 16]}
    return out


def validation_loss(status: dict[str, Any]) -> float | None:
    """The eval_loss a job's status reports: a search's final metrics, else a plain job's latest evaluation."""
    loss = (status.get("metrics") or {}).get("eval_loss")
    return loss if loss is not None else (status.get("progress") or {}).get("evalLoss")


def trial_seconds_per_step(trial: dict[str, Any]) -> float | None:
    """A succeeded trial's training seconds per step: train_runtime / totalSteps, else its whole pod time."""
    steps = trial.get("totalSteps") or trial.get("step")
    if not steps:
        return None
    runtime = (trial.get("metrics") or {}).get("train_runtime")
    if runtime is None:
        runtime = seconds_between(trial.get("startTime"), trial.get("completionTime"))
    return runtime / steps if runtime is not None else None


@dataclass(frozen=True)
class StoppedTrial:
    name: str
    step: int
    total_steps: int
    seconds_per_step: float
    rate_source: str  # where seconds_per_step came from

    @property
    def saved_seconds(self) -> float:
        return (self.total_steps - self.step) * self.seconds_per_step


@dataclass(frozen=True)
class Savings:
    stopped: list[StoppedTrial]
    trial_seconds: float  # every trial's pod time, start -> completion, as it ran

    @property
    def saved_seconds(self) -> float:
        return sum(t.saved_seconds for t in self.stopped)

    @property
    def share(self) -> float:
        """Saved time over what the trials would have taken had none been stopped."""
        would_have = self.trial_seconds + self.saved_seconds
        return self.saved_seconds / would_have if would_have else 0.0


def early_stopping_savings(trials: list[dict[str, Any]]) -> Savings:
    """What the median rule saved: each stopped trial's steps not run, at the measured rate of its batch size.

    The rate comes from the succeeded trials with the stopped trial's batch size (median of their
    train_runtime / totalSteps: evaluations included, process start-up not); when none succeeded with
    that batch size, from all succeeded trials' median seconds per sample times its batch size (a step's
    cost grows about linearly with the batch on CPU); with no succeeded trial at all, from the stopped
    trial's own time per step so far (start-up included: an overestimate).
    """

    def batch(trial: dict[str, Any]) -> Any:
        return (trial.get("parameters") or {}).get("batchSize")

    rates: dict[Any, list[float]] = {}
    per_sample: list[float] = []
    for trial in trials:
        rate = trial_seconds_per_step(trial) if trial["state"] == "Succeeded" else None
        if rate is not None:
            rates.setdefault(batch(trial), []).append(rate)
            if isinstance(batch(trial), int) and batch(trial) > 0:
                per_sample.append(rate / batch(trial))
    stopped = []
    for trial in trials:
        if trial["state"] != "EarlyStopped" or not trial.get("totalSteps"):
            continue
        step = int(trial.get("step") or 0)
        if batch(trial) in rates:
            rate, source = median(rates[batch(trial)]), f"succeeded trials with batchSize {batch(trial)}"
        elif per_sample and isinstance(batch(trial), int):
            rate = median(per_sample) * batch(trial)
            source = f"succeeded trials' seconds per sample x batchSize {batch(trial)}"
        else:
            elapsed = seconds_between(trial.get("startTime"), trial.get("completionTime")) or 0.0
            rate, source = elapsed / max(step, 1), "its own time per step (start-up included)"
        stopped.append(StoppedTrial(trial["name"], step, int(trial["totalSteps"]), rate, source))
    total = sum(seconds_between(t.get("startTime"), t.get("completionTime")) or 0.0 for t in trials)
    return Savings(stopped, total)


def evaluate(model_dir: Path, test_csv: Path, max_length: int) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the classifier in `model_dir` on `test_csv`, labels by the model's label2id."""
    import pandas as pd
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    frame = pd.read_csv(test_csv)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    label2id = model.config.label2id
    unknown = sorted(set(frame[LABEL_COLUMN].astype(str)) - set(label2id))
    if unknown:
        raise ValueError(
            f"{test_csv}: labels {unknown} are not among the model's {sorted(label2id)} ({model_dir}/config.json)"
        )
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(frame), 32):
            chunk = frame.iloc[start : start + 32]
            batch = tokenizer(
                list(chunk[TEXT_COLUMN].astype(str)),
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            target = torch.tensor([label2id[str(y)] for y in chunk[LABEL_COLUMN]])
            logits = model(**batch).logits
            loss_sum += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
            correct += int((logits.argmax(-1) == target).sum())
    return correct / len(frame), loss_sum / len(frame)


# --- the sandbox run ----------------------------------------------------------------------------


def smoke_assets(folder: Path) -> dict[str, Path]:
    """The tiny BERT and synthetic sentiment csvs of the sandbox tests, as PVC path -> local source."""
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from sandbox_support import write_sentiment_csv, write_tiny_text_classifier

    write_tiny_text_classifier(folder / "tiny-bert")
    # Every file the samples name: their held-out test sets included (spec.dataset.test).
    for split, rows in (("train", 64), ("validation", 16), ("test", 16), ("test_out_of_domain", 16)):
        write_sentiment_csv(folder / "sentiment" / f"{split}.csv", rows)
    return {"models/tiny-bert": folder / "tiny-bert", "datasets/sentiment": folder / "sentiment"}


def run_job(sandbox: Any, custom: Any, manifest: dict[str, Any], timeout: float) -> tuple[dict[str, Any], float]:
    """kubectl apply the manifest, wait for a terminal phase; (final object, seconds apply -> terminal phase)."""
    from finetune_cli.demo import kubectl_binary
    from finetune_operator.names import GROUP, PLURAL, VERSION
    from finetune_operator.reasons import TERMINAL_PHASES

    meta = manifest["metadata"]
    started = time.monotonic()
    subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(sandbox.kubeconfig), "apply", "-f", "-"],
        input=yaml.safe_dump(manifest),
        text=True,
        check=True,
        capture_output=True,
    )
    deadline = started + timeout
    while time.monotonic() < deadline:
        ftj = custom.get_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
        if (ftj.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return ftj, time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(
        f"{meta['name']} did not finish within {timeout:.0f}s (--timeout); "
        f"see {sandbox.data_dir}/operator.log and the pod logs beside it"
    )


def output_dir(sandbox: Any, ftj: dict[str, Any]) -> Path:
    from finetune_cli.demo import local_path

    status = ftj.get("status") or {}
    if status.get("phase") != "Succeeded":
        raise RuntimeError(
            f"{ftj['metadata']['name']} ended {status.get('phase')} ({status.get('reason')}): "
            f"{status.get('message')}; see {sandbox.data_dir}/operator.log"
        )
    uri = status.get("outputUri") or ftj["spec"]["output"]["uri"]
    path = local_path(sandbox, ftj["metadata"]["namespace"], uri)
    if path is None or not (path / "config.json").is_file():
        raise RuntimeError(f"{ftj['metadata']['name']}: no model in {uri} (local {path})")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--epochs",
        type=float,
        default=1.0,
        help="hyperparameters.epochs of both jobs (the samples say 2; 1 keeps the run under 10 minutes "
        "on 2 cores); 0 runs the samples as written",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny BERT, synthetic data, 2 trials: target not checked")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds to wait for each job")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox folder (logs, models) for inspection")
    args = parser.parse_args()

    from finetune_cli.demo import demo_assets, prepare_volumes
    from finetune_sandbox.cluster import Sandbox, SandboxThread
    from kubernetes import client, config

    default, search = (yaml.safe_load(p.read_text()) for p in (DEFAULT_SAMPLE, SEARCH_SAMPLE))
    epochs = None if args.smoke or args.epochs == 0 else args.epochs
    default, search = with_epochs(default, epochs), with_epochs(search, epochs)
    if args.smoke:
        default, search = smoke_variant(default), smoke_variant(search)
    namespace = default["metadata"]["namespace"]
    max_length = int(default["spec"]["hyperparameters"]["maxSeqLength"])

    work = Path(tempfile.mkdtemp(prefix="search-quality-"))
    assets = smoke_assets(work / "assets") if args.smoke else demo_assets()
    test_csv = assets["datasets/sentiment"] / "test.csv"
    load_before = os.getloadavg()
    runner = SandboxThread(Sandbox(work / "sandbox", gpus=0))
    runner.start()
    try:
        sandbox = runner.sandbox
        custom = client.CustomObjectsApi(config.new_client_from_config(config_file=str(sandbox.kubeconfig)))
        prepare_volumes(sandbox, namespace, assets)
        # The default job first and alone, so its wall time is not shared with trials.
        default_ftj, default_wall = run_job(sandbox, custom, default, args.timeout)
        search_ftj, search_wall = run_job(sandbox, custom, search, args.timeout)
        default_dir, search_dir = output_dir(sandbox, default_ftj), output_dir(sandbox, search_ftj)
        default_acc, default_loss = evaluate(default_dir, test_csv, max_length)
        search_acc, search_loss = evaluate(search_dir, test_csv, max_length)
    finally:
        runner.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    default_status, search_status = default_ftj["status"], search_ftj["status"]
    trials = search_status.get("trials") or []
    savings = early_stopping_savings(trials)
    best = search_status.get("bestTrial") or {}
    print(
        f"machine: {os.cpu_count()} CPUs; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
        f"{'; kept ' + str(work) if args.keep else ''}"
    )
    for trial in trials:
        print(
            f"  {trial['name']}: {trial['state']:<12} {trial.get('parameters')} step {trial.get('step')}/"
            f"{trial.get('totalSteps')} eval_loss {trial.get('objectiveValue')} "
            f"{seconds_between(trial.get('startTime'), trial.get('completionTime'))} s"
        )
    for stopped in savings.stopped:
        print(
            f"  stopped {stopped.name} at step {stopped.step}/{stopped.total_steps}: saved "
            f"{stopped.saved_seconds:.0f} s at {stopped.seconds_per_step:.2f} s/step ({stopped.rate_source})"
        )
    print(f"best trial: {best.get('name')} {best.get('parameters')}")
    print(
        f"validation eval_loss (status): default {validation_loss(default_status)}, "
        f"search {validation_loss(search_status)}"
    )
    print(
        f"test ({test_csv.name}): default accuracy {default_acc:.3f} loss {default_loss:.4f}; "
        f"search accuracy {search_acc:.3f} loss {search_loss:.4f}"
    )
    print(
        f"early stopping: {len(savings.stopped)} of {len(trials)} trials stopped; {savings.saved_seconds:.0f} "
        f"CPU-seconds saved of {savings.trial_seconds + savings.saved_seconds:.0f} without stopping "
        f"({savings.share:.1%}); 0 GPU-seconds (CPU only)"
    )
    ratio = default_loss / search_loss if search_loss > 0 else float("inf")
    target = "smoke: target not checked" if args.smoke else "target >= 1"
    label = f"epochs {epochs:g}" if epochs is not None else ("smoke" if args.smoke else "samples as written")
    print(
        f"search quality ({label}): wall search {search_wall:.0f} s, default {default_wall:.0f} s; "
        f"early stopping saved {savings.saved_seconds:.0f} CPU-s ({savings.share:.1%}); test loss search "
        f"{search_loss:.4f} vs default {default_loss:.4f}; ratio default/search test loss: {ratio:.3f} ({target})"
    )
    return 0 if args.smoke or ratio >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
