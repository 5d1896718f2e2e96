"""The trainer's entry point: parse the config, build the task, train, write model, metrics and card.

Shaped like transformers' run_glue.py: one linear `main()` whose blocks are narrated by comments.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import traceback

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed
from transformers.utils import logging as hf_logging

from finetune_trainer.arguments import parse_config_file
from finetune_trainer.checkpoint_store import (
    CheckpointStore,
    CheckpointUploader,
    grace_seconds,
    resume_point,
    upload_deadline,
    upload_outputs,
)
from finetune_trainer.checkpoints import (
    CompleteCheckpointCallback,
    GracefulStop,
    NoDuplicateFinalCheckpoint,
    newest_complete_checkpoint,
    recorded_global_batch,
    remove_incomplete_checkpoints,
)
from finetune_trainer.data_parallel import accumulation_keeping, data_parallel_trainer
from finetune_trainer.errors import (
    EXIT_OK,
    EXIT_PREEMPTED,
    PEER_LOST,
    STOPPED,
    STOPPED_BY_PEER,
    InvalidData,
    TrainerFailure,
    classify_exception,
    completion_message,
    write_termination_message,
    write_termination_text,
)
from finetune_trainer.methods import apply_method, count_parameters
from finetune_trainer.model_card import render_model_card
from finetune_trainer.reporting.environment import reporting_callbacks
from finetune_trainer.retention import retention_report
from finetune_trainer.sources import fetch, output_dir_for
from finetune_trainer.tasks import DataPaths, build_task
from finetune_trainer.training_setup import choose_precision, training_arguments_kwargs

# How long a rank that another rank ended waits for its own SIGTERM (see _wait_for_own_sigterm): enough
# for the Job controller to see the first rank fail and stop the others, bounded for a rank that hangs.
FOLLOWER_WAIT_SECONDS = 60

logger = logging.getLogger("finetune_trainer")

BASELINE_FILE = "baseline-metrics.json"  # before-training metrics, kept beside the checkpoints for resumes


def main(config_path: str) -> int:
    """Run one job in-process; return the exit code of docs/pod-contract.md (never calls sys.exit)."""
    _setup_logging()
    try:
        code = _run(config_path)
    except BaseException as exc:  # noqa: BLE001 - every failure must become an exit code and a message
        if isinstance(exc, KeyboardInterrupt):
            raise
        code, reason = classify_exception(exc)
        if isinstance(exc, TrainerFailure):
            # Recognised (bad input, a storage refusal, the Hub offline): its message says it all.
            logger.error("%s: %s", reason, exc)
        else:
            logger.error("training failed (%s):\n%s", reason, traceback.format_exc())
        write_termination_message(reason, str(exc) or type(exc).__name__)
        if reason == PEER_LOST:
            _wait_for_own_sigterm(FOLLOWER_WAIT_SECONDS)
        return code
    _leave_process_group()
    return code


def _leave_process_group() -> None:
    """Close torchrun's process group once a rank is done: left open, its gloo threads can abort the
    interpreter at exit ("terminate called without an active exception", exit -6) after the run succeeded,
    and a rank that exits -6 fails the pod."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _setup_logging() -> None:
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def parse_config(config_path: str):
    if not os.path.isfile(config_path):
        raise InvalidData(f"config file {config_path} does not exist")
    try:
        return parse_config_file(config_path)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise InvalidData(f"config {config_path}: {exc}") from exc


def assemble_callbacks(run_args, checkpoints_dir: str, stop, uploader=None) -> list:
    """Every TrainerCallback of a run, in one place."""
    callbacks = [
        CompleteCheckpointCallback(checkpoints_dir, run_args.checkpoints_to_keep, uploader),
        NoDuplicateFinalCheckpoint(run_args.checkpoint_steps),
        stop,  # after NoDuplicateFinalCheckpoint: a stop request always saves
    ]
    if run_args.early_stopping_metric:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=run_args.early_stopping_patience))
    # After CompleteCheckpointCallback: a checkpoint is marked complete before its report says so.
    callbacks += reporting_callbacks()
    return callbacks


def trainer_with_derived_metrics(base_class, derive):
    """A Trainer class whose evaluate() also returns metrics derived from the loss (e.g. perplexity)."""
    if derive is None:
        return base_class

    class DerivedMetricsTrainer(base_class):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **kwargs):
            metrics = super().evaluate(
                eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **kwargs
            )
            metrics.update(derive(metrics, metric_key_prefix))
            return metrics

    return DerivedMetricsTrainer


def _numbers(metrics: dict) -> dict:
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.endswith("_model_preparation_time")
    }


def prepare_checkpoints_dir(output_dir: str) -> str:
    """The checkpoints folder under `output_dir`, without the partial checkpoints of a killed save."""
    checkpoints_dir = os.path.join(output_dir, "checkpoints")
    os.makedirs(checkpoints_dir, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:  # one process cleans the shared output folder
        for folder in remove_incomplete_checkpoints(checkpoints_dir):
            logger.warning("removed incomplete checkpoint %s", folder)
    return checkpoints_dir


def fetch_data(data_args) -> DataPaths:
    return DataPaths(
        train=fetch(data_args.train_uri, what="train data"),
        validation=fetch(data_args.validation_uri, what="validation data") if data_args.validation_uri else None,
        retention=fetch(data_args.retention_uri, what="retention data") if data_args.retention_uri else None,
        tests={name: fetch(uri, what=f"test data {name!r}") for name, uri in data_args.test_uris.items()},
    )


def test_datasets(setup, paths, task: str) -> dict:
    """Test set name -> its dataset, read and encoded as the validation set is; read before training so that
    bad test data fails the run at once, not after hours of training."""
    if paths.tests and setup.evaluation_set is None:
        raise InvalidData(f"task {task} cannot evaluate test sets (dataset.test); leave dataset.test out")
    tests = {name: setup.evaluation_set(path) for name, path in paths.tests.items()}
    if tests:
        setup.data_summary["test_rows"] = {name: len(dataset) for name, dataset in tests.items()}
    return tests


def evaluate_tests(trainer, setup, tests: dict) -> dict:
    """test_<name>_* metrics of every test set, by predict(): evaluate() would also reach the callbacks, which
    take every evaluation for the latest validation result (early stopping, progress reports, status)."""
    metrics = {}
    for name, dataset in tests.items():
        prefix = f"test_{name}"
        numbers = _numbers(trainer.predict(dataset, metric_key_prefix=prefix).metrics)
        if setup.derive_metrics is not None:
            numbers.update(setup.derive_metrics(numbers, prefix))
        metrics.update({k: v for k, v in numbers.items() if not k.endswith(("_runtime", "_per_second"))})
    return metrics


def build_trainer(setup, model, run_args, checkpoints_dir: str, stop, *, precision: str, use_cpu: bool, uploader=None):
    """The Trainer (or the task's Trainer class) over the task's datasets, with every callback of the run."""
    kwargs = training_arguments_kwargs(
        run_args,
        checkpoints_dir=checkpoints_dir,
        precision=precision,
        has_eval=setup.eval_dataset is not None,
        use_cpu=use_cpu,
    )
    kwargs.update(setup.extra_training_arguments)
    # The same losses and gradients on N ranks as on one process: see data_parallel.py.
    trainer_class = trainer_with_derived_metrics(
        data_parallel_trainer(setup.trainer_class or Trainer), setup.derive_metrics
    )
    training_args = (setup.arguments_class or TrainingArguments)(**kwargs)
    return trainer_class(
        model=model,
        args=training_args,
        train_dataset=setup.train_dataset,
        eval_dataset=setup.eval_dataset,
        data_collator=setup.data_collator,
        processing_class=setup.processor,
        compute_metrics=setup.compute_metrics,
        preprocess_logits_for_metrics=setup.preprocess_logits_for_metrics,
        callbacks=assemble_callbacks(run_args, checkpoints_dir, stop, uploader),
    )


def evaluate_splits(trainer, setup) -> tuple[dict, dict]:
    """(eval metrics, retention metrics), each {} where the run has no such set."""
    evaluation = _numbers(trainer.evaluate()) if setup.eval_dataset is not None else {}
    retention = (
        _numbers(trainer.evaluate(setup.retention_dataset, metric_key_prefix="retention"))
        if setup.retention_dataset is not None
        else {}
    )
    return evaluation, retention


def baseline_metrics(trainer, setup, baseline_path: str, resumed: bool) -> dict:
    """Eval and retention metrics before training, kept at `baseline_path` so that a resumed run reads the
    first run's numbers instead of evaluating again."""
    if resumed and os.path.isfile(baseline_path):
        with open(baseline_path) as f:
            return json.load(f)
    evaluation, retention = evaluate_splits(trainer, setup)
    baseline = {**evaluation, **retention}
    if trainer.is_world_process_zero():
        with open(baseline_path, "w") as f:
            json.dump(baseline, f)
    return baseline


def save_merged_model(model, processor, merged_dir: str) -> None:
    """The LoRA adapter merged into the base model, for runtimes that cannot load an adapter."""
    model.merge_and_unload().save_pretrained(merged_dir)
    if processor is not None:
        processor.save_pretrained(merged_dir)


def run_facts(model_args, setup, model, state, precision: str, parameters: tuple[int, int], resume_from) -> dict:
    """What ran and how far: task, method, precision, parameters, steps, checkpoints, labels and data."""
    trainable, total = parameters
    facts = {
        "task": model_args.task,
        "method": model_args.method,
        "precision": precision,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "global_step": state.global_step,
        "epoch": state.epoch,
        "resumed_from_step": _step_of(resume_from),
        "best_checkpoint": os.path.basename(state.best_model_checkpoint or "") or None,
        "stopped_early": state.global_step < state.max_steps,  # early stopping ended it
        "labels": setup.labels,
        "data": setup.data_summary,
    }
    if getattr(model, "peft_config", None):
        facts["lora_target_modules"] = sorted(next(iter(model.peft_config.values())).target_modules)
    return facts


def before_and_after(baseline: dict, retention_after: dict, task: str) -> dict:
    """Eval metrics before training (`*_before`, beside the after values) and the retention (forgetting) report."""
    before = {
        f"{key}_before": value
        for key, value in baseline.items()
        if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second"))
    }
    return {**before, **retention_report(baseline, retention_after, language_model=task == "causal-lm")}


def write_results(output_dir: str, metrics: dict, model_args, data_args, run_args, setup) -> None:
    """metrics.json and the model card (README.md) beside the saved model."""
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    with open(os.path.join(output_dir, "README.md"), "w") as f:
        f.write(
            render_model_card(
                model_args=model_args,
                data_args=data_args,
                run_args=run_args,
                metrics=metrics,
                data_summary=setup.data_summary,
                labels=setup.labels,
            )
        )
    logger.info("done: %s", json.dumps({k: v for k, v in metrics.items() if k.startswith("eval_")}, sort_keys=True))


def _run(config_path: str) -> int:
    # Progress bars garble pod logs; Trainer's own log lines carry the numbers.
    hf_logging.disable_progress_bar()

    # Stop requests may come while we load data: catch SIGTERM from the start.
    stop = GracefulStop()
    stop.install()
    uploader = None
    try:
        model_args, data_args, run_args = parse_config(config_path)
        set_seed(run_args.seed)

        # Where results go; partial checkpoints from a killed save are discarded.
        output_dir, upload_to = output_dir_for(run_args.output_uri)
        checkpoints_dir = prepare_checkpoints_dir(output_dir)
        # An s3:// output: checkpoints stream to the store as they complete, and a pod on an empty disk resumes
        # from the newest complete one there (checkpoint_store.py).
        store = CheckpointStore(upload_to) if upload_to else None
        resume_from = resume_point(checkpoints_dir, store) if store else newest_complete_checkpoint(checkpoints_dir)
        ranks = int(os.environ.get("WORLD_SIZE") or 1)
        uploader = CheckpointUploader(store, run_args.checkpoints_to_keep, ranks) if store else None

        # Fetch the base model and the data (hf://, s3://, pvc://, file paths).
        model_path = fetch(model_args.model_uri, revision=model_args.model_revision, what="model")
        paths = fetch_data(data_args)

        # Build the task: model, processor, datasets, collator and metrics.
        setup = build_task(model_args.task, model_path, model_args, data_args, run_args, paths)
        tests = test_datasets(setup, paths, model_args.task)

        # Apply the method (full / lora / freeze).
        model = apply_method(setup.model, model_args, setup.peft_task_type, setup.head_modules)
        parameters = count_parameters(model)

        # Precision: half precision only where CUDA supports it.
        cuda = torch.cuda.is_available()
        precision, why = choose_precision(run_args.precision, cuda, cuda and torch.cuda.is_bf16_supported())
        logger.info("precision %s (%s)", precision, why)

        # A resume on another number of ranks keeps the checkpoint's global batch (data_parallel.py).
        if resume_from:
            _keep_global_batch(run_args, resume_from)

        # Training arguments and callbacks.
        trainer = build_trainer(
            setup, model, run_args, checkpoints_dir, stop, precision=precision, use_cpu=not cuda, uploader=uploader
        )

        # Evaluate before training (the "before" of before/after); a resumed run reuses the first run's numbers.
        baseline = baseline_metrics(trainer, setup, os.path.join(checkpoints_dir, BASELINE_FILE), bool(resume_from))
        if stop.requested:
            logger.warning("stopped before training started; nothing to save")
            return _stopped(stop, "before training started; nothing to save")

        # Train, resuming from the newest complete checkpoint.
        if resume_from:
            logger.info("resuming from %s", resume_from)
        train_result = trainer.train(resume_from_checkpoint=resume_from)
        if stop.requested and trainer.state.global_step < trainer.state.max_steps:
            logger.warning("stopped at step %d after saving a checkpoint", trainer.state.global_step)
            return _stopped(stop, f"at step {trainer.state.global_step} after saving a checkpoint")

        # Evaluate after training.
        final_eval, retention_after = evaluate_splits(trainer, setup)
        tested = evaluate_tests(trainer, setup, tests)

        # Save the model (or adapter) with its processor; optionally the merged model too.
        trainer.save_model(output_dir)
        if trainer.is_world_process_zero():
            if model_args.method == "lora" and model_args.merge_adapter:
                save_merged_model(trainer.model, setup.processor, os.path.join(output_dir, "merged"))

            # metrics.json and the model card: what ran, the numbers after training, and those before.
            metrics = run_facts(model_args, setup, model, trainer.state, precision, parameters, resume_from)
            metrics.update({**_numbers(train_result.metrics), **final_eval, **tested})
            metrics.update(before_and_after(baseline, retention_after, model_args.task))
            write_results(output_dir, metrics, model_args, data_args, run_args, setup)
            if upload_to:
                upload_outputs(output_dir, upload_to)
            # Last, once the output is in place: the operator reads a search trial's objective from here.
            final_numbers = {key: value for key, value in final_eval.items() if key.startswith("eval_")}  # not "epoch"
            write_termination_text(completion_message(trainer.state.global_step, final_numbers))
        return EXIT_OK
    finally:
        # Before exiting, on every path: a checkpoint not yet in the store is lost with the pod's disk.
        if uploader is not None:
            uploader.finish(lambda: upload_deadline(stop.requested_at, grace_seconds()))
        stop.uninstall()


def _keep_global_batch(run_args, resume_from: str) -> None:
    ranks = int(os.environ.get("WORLD_SIZE") or 1)
    saved = recorded_global_batch(resume_from)
    accumulation = accumulation_keeping(saved, run_args.batch_size, run_args.gradient_accumulation_steps, ranks)
    if accumulation is not None:
        logger.warning(
            "%s was trained with a global batch of %d; on %d rank(s) of batch %d, gradient accumulation %d (not %d) "
            "keeps it, and with it the steps, epochs and learning-rate schedule",
            resume_from,
            saved,
            ranks,
            run_args.batch_size,
            accumulation,
            run_args.gradient_accumulation_steps,
        )
        run_args.gradient_accumulation_steps = accumulation


def _wait_for_own_sigterm(seconds: float) -> None:
    """Before a rank that another rank ended exits, wait (at most `seconds`) for its own SIGTERM.

    The rank to blame (deleted, preempted, crashed) then always fails first: the Job controller stops the
    other ranks only after it, so the Job's failure and the operator's restart name that rank, not one
    that merely followed it (docs/reliability.md, gang restarts)."""
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    except ValueError:
        return  # not the main thread: an embedding app handles signals itself
    try:
        deadline = time.monotonic() + seconds
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(stop: GracefulStop, when: str) -> int:
    """EXIT_PREEMPTED, with a termination message saying whether this rank got SIGTERM or stopped with
    another rank that did (a multi-rank job's restart names the rank that was stopped, not its peers)."""
    if stop.by_peer:
        write_termination_message(
            STOPPED_BY_PEER, f"stopped with the other ranks {when}: another rank received SIGTERM"
        )
        _wait_for_own_sigterm(FOLLOWER_WAIT_SECONDS)
    else:
        write_termination_message(STOPPED, f"stopped by SIGTERM {when}")
    return EXIT_PREEMPTED


def _step_of(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    return int(os.path.basename(checkpoint).rsplit("-", 1)[-1])
