"""Checkpoints that count only when complete, rotation, automatic resume, and stop-on-SIGTERM.

Trainer writes `checkpoint-STEP/` piece by piece; a pod killed mid-save leaves a partial folder.
We write a `COMPLETE` marker after Trainer's save returns, resume only from marked folders, and
remove unmarked ones on start. Rotation is ours (Trainer's save_total_limit would delete the
previous checkpoint before the new one is marked, leaving a window with no complete checkpoint).
The marker also records the global batch the checkpoint was trained with, which a resume must keep
(data_parallel.py). With an s3:// output each marked checkpoint also streams to the store
(checkpoint_store.py), and the rotation spares the one being uploaded until a later save.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import time

import torch
import torch.distributed as dist
from transformers import TrainerCallback

logger = logging.getLogger("finetune_trainer")

COMPLETE_MARKER = "COMPLETE"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def step_of(name: str) -> int | None:
    """The STEP of a `checkpoint-STEP` folder name (a path's last part counts), else None."""
    match = _CHECKPOINT_RE.match(os.path.basename(name.rstrip("/")))
    return int(match.group(1)) if match else None


def checkpoint_steps(checkpoints_dir: str) -> dict[int, str]:
    """step -> folder of every checkpoint-STEP folder (complete or not)."""
    if not os.path.isdir(checkpoints_dir):
        return {}
    found = {}
    for name in os.listdir(checkpoints_dir):
        step = step_of(name)
        if step is not None and os.path.isdir(os.path.join(checkpoints_dir, name)):
            found[step] = os.path.join(checkpoints_dir, name)
    return found


def is_complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, COMPLETE_MARKER))


def complete_checkpoints(checkpoints_dir: str) -> list[tuple[int, str]]:
    """(step, folder) of complete checkpoints, oldest first."""
    return sorted((step, folder) for step, folder in checkpoint_steps(checkpoints_dir).items() if is_complete(folder))


def newest_complete_checkpoint(checkpoints_dir: str) -> str | None:
    complete = complete_checkpoints(checkpoints_dir)
    return complete[-1][1] if complete else None


def remove_incomplete_checkpoints(checkpoints_dir: str) -> list[str]:
    """Delete partial checkpoint folders (left by a kill during a save); returns what was removed."""
    removed = []
    for _, folder in sorted(checkpoint_steps(checkpoints_dir).items()):
        if not is_complete(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def mark_complete(folder: str, global_batch: int | None = None) -> None:
    # Write-then-rename so the marker itself never exists half-written.
    tmp = os.path.join(folder, COMPLETE_MARKER + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps({"global_batch": global_batch} if global_batch else {}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(folder, COMPLETE_MARKER))


def recorded_global_batch(folder: str) -> int | None:
    """The global batch the marker of `folder` records; None where it records none (an older trainer's marker)."""
    try:
        with open(os.path.join(folder, COMPLETE_MARKER)) as f:
            facts = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return None
    value = facts.get("global_batch") if isinstance(facts, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def global_batch_of(args) -> int:
    """Samples per optimizer step over all ranks: train_batch_size is the per-device batch times the GPUs of a
    single-process DataParallel run."""
    return args.train_batch_size * args.gradient_accumulation_steps * args.world_size


def steps_to_delete(complete_steps: list[int], keep: int, spared: set[int]) -> list[int]:
    """The rotation rule, for local folders and the store alike: the complete steps beyond the newest `keep`,
    sparing `spared` (the best checkpoint; locally also the one being uploaded). Pure."""
    old = sorted(complete_steps)[: -max(1, keep)]
    return [step for step in old if step not in spared]


def checkpoints_to_delete(
    complete: list[tuple[int, str]], keep: int, protected: str | None, uploading: str | None = None
) -> list[str]:
    """Folders beyond the newest `keep` complete ones, sparing `protected` (the best checkpoint) and
    `uploading` (still being read by the store upload; rotated at a later save). Pure."""
    spared = {step_of(folder) for folder in (protected, uploading) if folder}
    folders = dict(complete)
    return [folders[step] for step in steps_to_delete(list(folders), keep, spared)]


def _all_ranks_here(args) -> None:
    """Return once every rank has called this (a no-op in a single process): a one-element all-reduce, like
    GracefulStop's, so that it behaves alike on gloo and NCCL."""
    if dist.is_available() and dist.is_initialized():
        flag = torch.zeros(1, device=args.device)
        dist.all_reduce(flag)
        flag.item()  # waits for the reduction on a GPU too


class CompleteCheckpointCallback(TrainerCallback):
    """After each save: mark the checkpoint complete, then rotate (main process only).

    With several ranks, rank 0 writes the checkpoint and every rank writes its own rng_state_RANK.pth, with
    no barrier in Trainer's save. The marker waits for every rank's part, and no rank leaves the save before
    the marker is written: a rank that goes ahead could exit (after a stop) while rank 0 still writes, and in
    a multi-node Job the first pod to exit fails the gang, whose other pods the Job controller then stops.
    """

    def __init__(self, checkpoints_dir: str, keep: int, uploader=None):
        self.checkpoints_dir = checkpoints_dir
        self.keep = keep
        # With an s3:// output, checkpoint_store.CheckpointUploader: rank 0 hands it each marked checkpoint to
        # upload in the background; a rank on another node's disk puts its own part of the save with it.
        self.uploader = uploader

    def on_save(self, args, state, control, **kwargs):
        _all_ranks_here(args)
        if state.is_world_process_zero:
            self._mark_and_rotate(args, state)
        _all_ranks_here(args)
        if not state.is_world_process_zero and self.uploader is not None:
            folder = os.path.join(self.checkpoints_dir, f"checkpoint-{state.global_step}")
            self.uploader.put_own_part(folder, args.process_index)

    def _mark_and_rotate(self, args, state) -> None:
        folder = os.path.join(self.checkpoints_dir, f"checkpoint-{state.global_step}")
        if not os.path.isdir(folder):
            return
        mark_complete(folder, global_batch_of(args))
        if self.uploader is not None:
            self.uploader.submit(folder, state.best_model_checkpoint)
        uploading = self.uploader.uploading if self.uploader is not None else None
        for old in checkpoints_to_delete(
            complete_checkpoints(self.checkpoints_dir), self.keep, state.best_model_checkpoint, uploading
        ):
            shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint complete: %s", folder)


class NoDuplicateFinalCheckpoint(TrainerCallback):
    """Skip Trainer's end-of-training checkpoint when it falls between checkpoint_steps boundaries.

    The final model is written to the output folder moments later; a checkpoint of the same weights
    plus optimizer state (about 3x the model) would only cost time and disk. Saves asked for by
    GracefulStop (registered after this) and by load_best_model_at_end are kept.
    """

    def __init__(self, checkpoint_steps: int):
        self.checkpoint_steps = checkpoint_steps

    def on_step_end(self, args, state, control, **kwargs):
        at_end = state.max_steps > 0 and state.global_step >= state.max_steps
        if at_end and not args.load_best_model_at_end and state.global_step % self.checkpoint_steps != 0:
            control.should_save = False
        return control


class GracefulStop(TrainerCallback):
    """On SIGTERM: finish the current optimizer step, save a checkpoint, and stop training.

    The kubelet sends SIGTERM and waits terminationGracePeriodSeconds before SIGKILL; one step plus
    one save must fit in that period. `run.main` then returns EXIT_PREEMPTED (143).
    """

    def __init__(self):
        self.requested = False
        # This process got SIGTERM itself (else another rank did, and the stop was agreed in _agree).
        self.signalled = False
        # time.monotonic() of the first request: the grace period runs from here (checkpoint_store.upload_deadline).
        self.requested_at: float | None = None
        self._previous = None

    def request(self, *_):
        if not self.requested:
            logger.warning("SIGTERM received: saving a checkpoint at the next step boundary, then stopping")
            self.requested_at = time.monotonic()
        self.requested = True
        self.signalled = True

    @property
    def by_peer(self) -> bool:
        """Stopped because another rank was asked to stop: the operator looks for the rank that was not."""
        return self.requested and not self.signalled

    def install(self) -> None:
        try:
            self._previous = signal.signal(signal.SIGTERM, self.request)
        except ValueError:
            # Not the main thread (an embedding app): it handles signals itself.
            self._previous = None

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _agree(self, args) -> bool:
        """In multi-process runs every rank must stop at the same step (saving is collective):
        one rank's request stops them all. A one-element all-reduce per step."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and not self.requested:
            logger.warning("another rank received SIGTERM: saving a checkpoint with it, then stopping")
            self.requested_at = time.monotonic()
        self.requested = bool(flag.item())
        return self.requested

    def on_step_end(self, args, state, control, **kwargs):
        if self._agree(args):
            control.should_save = True
            control.should_evaluate = False  # no time for it within the grace period
            control.should_training_stop = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_evaluate = False
            control.should_save = False  # saved at the step end already
        return control
