"""Training on N ranks as on one: the same gradients, and losses that do not depend on the number of ranks.

Two faults of transformers 5 / accelerate 1.16 under data parallelism (torchrun, DDP), each fixed here in a
Trainer subclass (`data_parallel_trainer`):

1. The loss was multiplied by the number of ranks. The Trainer counts the labelled items of the whole step
   (all accumulated micro-batches, on all ranks under `average_tokens_across_devices`, the default) and
   passes the count as `num_items_in_batch` to any model whose forward takes `**kwargs`
   (`model_accepts_loss_kwargs`). It then takes the loss to be `sum over this micro-batch /
   num_items_in_batch`: `compute_loss` multiplies it by the number of processes (DDP averages gradients
   over ranks, which undoes that), and `training_step` does not divide it by the accumulation steps. Both
   are right for a loss that divides by the count (most causal LMs, a label smoother) and wrong for a model
   that takes `**kwargs` and returns its own mean (BERT's sequence and token classifiers, T5, BART, ...):
   with 2 ranks every train and eval loss was doubled, and so was the gradient (the same with 2
   accumulation steps on one process).

   Whether a loss divides by the count is a property of the model class and of the loss path, so it is
   measured once: on the first batch that comes with a count, the loss is computed in eval mode without
   gradients with the count and with twice the count. A loss that halves keeps transformers' exact token
   averaging across ranks and accumulation steps; any other loss gets no count: no multiplication by the
   ranks, and a division by the accumulation steps.

2. The model was not wrapped in DistributedDataParallel when it was evaluated before training (run.py's
   "before" metrics): that evaluation has accelerate prepare the model in evaluation mode, which marks it
   prepared, and the `prepare` of `train()` then returns it unwrapped. No gradient was all-reduced: every
   rank trained its own copy on its share of the data, and rank 0 saved its copy. `train()` here undoes the
   evaluation-only preparation first, so that accelerate wraps the model for training.

A resume on another number of ranks continues exactly where the checkpoint stopped as long as the global
batch (batch size x gradient accumulation steps x ranks) is the same: the sampler's order depends on the
seed and the epoch only, each rank takes its share of every global batch, and Trainer skips global_step
global batches. With another global batch, Trainer still skips global_step of the new (larger or smaller)
global batches and recounts the epochs from them: the run silently trains some samples again and others
not at all (the epoch went from 2.33 back to 1.25 resuming 2 ranks of 8 on one rank of 8). `train()`
refuses such a resume and says which accumulation keeps the global batch.
"""

from __future__ import annotations

import logging
import math

import torch

from finetune_trainer.checkpoints import recorded_global_batch
from finetune_trainer.errors import InvalidData

logger = logging.getLogger("finetune_trainer")

# The loss with twice the count over the loss with the count: 0.5 divides by it, 1.0 ignores it.
_HALVED = (0.45, 0.55)


def verdict(once: float, twice: float) -> bool | None:
    """True when `twice` (the loss with twice the count) is half of `once`, False when it is the same,
    None when the batch cannot tell (a zero or non-finite loss). Pure."""
    if not (math.isfinite(once) and math.isfinite(twice)) or once == 0.0:
        return None
    ratio = twice / once
    if _HALVED[0] <= ratio <= _HALVED[1]:
        return True
    if math.isclose(ratio, 1.0, rel_tol=1e-3):
        return False
    return None


def agreed(divides_votes: int, ignores_votes: int) -> bool:
    """The verdict of all ranks from their votes: the count is passed only where a rank saw the loss divide
    by it and none saw it ignore it (where no rank's batch could tell, each micro-batch keeps its mean). Pure."""
    return divides_votes > 0 and ignores_votes == 0


def accumulation_keeping(saved: int | None, batch_size: int, accumulation: int, ranks: int) -> int | None:
    """The gradient accumulation with which this run keeps the global batch `saved` of the checkpoint it
    resumes, when that needs another accumulation than its own and one exists; else None. Pure.

    A job recreated on another number of nodes keeps its spec's per-process batch, so its global batch
    would change with the ranks; as DeepSpeed's elasticity does, the resume keeps the checkpoint's global
    batch (and so its steps, epochs and learning-rate schedule) by accumulating more or fewer micro-batches."""
    if saved is None or saved == batch_size * accumulation * ranks or saved % (batch_size * ranks):
        return None
    return saved // (batch_size * ranks)


def global_batch_change(saved: int | None, batch_size: int, accumulation: int, ranks: int) -> str | None:
    """Why this run cannot resume a checkpoint trained with a global batch of `saved`, or None when it can. Pure."""
    current = batch_size * accumulation * ranks
    if saved is None or saved == current:
        return None
    if saved % (batch_size * ranks) == 0:
        fix = f"set hyperparameters.gradientAccumulationSteps to {saved // (batch_size * ranks)}"
    elif saved % ranks == 0:
        fix = f"choose hyperparameters.batchSize and gradientAccumulationSteps whose product is {saved // ranks}"
    else:
        fix = f"resume on a number of ranks (nodes x processes per node) that divides {saved}"
    return (
        f"the checkpoint was trained with a global batch of {saved} (batchSize x gradientAccumulationSteps x "
        f"ranks) and this run's is {current} ({batch_size} x {accumulation} x {ranks}): resuming it would train "
        f"some samples twice and skip others; {fix}, or give another output uri to start afresh"
    )


def data_parallel_trainer(base_class):
    """A Trainer class whose losses and gradients on N ranks are those of one process (see the module doc)."""

    class DataParallelTrainer(base_class):
        loss_divides_by_num_items: bool | None = None  # None until measured

        def train(self, resume_from_checkpoint=None, *args, **kwargs):
            if resume_from_checkpoint:
                change = global_batch_change(
                    recorded_global_batch(resume_from_checkpoint),
                    self.args.train_batch_size,
                    self.args.gradient_accumulation_steps,
                    self.args.world_size,
                )
                if change:
                    raise InvalidData(f"cannot resume {resume_from_checkpoint}: {change}")
            self._undo_evaluation_only_preparation()
            return super().train(resume_from_checkpoint, *args, **kwargs)

        def _undo_evaluation_only_preparation(self) -> None:
            model = self.model
            if (
                self.accelerator.num_processes <= 1  # nothing to wrap
                or self.is_deepspeed_enabled  # evaluation prepared these in full
                or self.is_fsdp_enabled
                or self.model_wrapped is not model  # already wrapped
                or not getattr(model, "_is_accelerate_prepared", False)  # not prepared yet: train() will
            ):
                return
            # As if evaluation had not prepared it: out of accelerate's registry (train()'s prepare registers
            # it again), without the autocast forward the preparation added, and no longer marked prepared.
            self.accelerator._models = [m for m in self.accelerator._models if m is not model]
            self.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
            model._is_accelerate_prepared = False
            logger.info("model prepared for evaluation only; preparing it again for distributed training")

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if (
                num_items_in_batch is not None
                and self.loss_divides_by_num_items is None
                and (self.model_accepts_loss_kwargs or self.compute_loss_func is not None)
            ):
                self._measure_loss_normalization(model, inputs, num_items_in_batch)
            if self.loss_divides_by_num_items is False:
                num_items_in_batch = None
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

        def _measure_loss_normalization(self, model, inputs, num_items_in_batch) -> None:
            # Every rank gets here at the same call (its first batch with a count: ranks see the same number
            # of batches), so every rank joins the vote's reduction.
            was_training = model.training
            model.eval()  # no dropout: the two losses differ by the count only
            try:
                with torch.no_grad():
                    once = super().compute_loss(model, dict(inputs), num_items_in_batch=num_items_in_batch)
                    twice = super().compute_loss(model, dict(inputs), num_items_in_batch=num_items_in_batch * 2)
            finally:
                model.train(was_training)
            local = verdict(once.detach().float().mean().item(), twice.detach().float().mean().item())
            votes = torch.tensor([local is True, local is False], dtype=torch.long, device=self.args.device)
            if self.accelerator.num_processes > 1:
                votes = self.accelerator.reduce(votes, reduction="sum")
            divides = agreed(int(votes[0]), int(votes[1]))
            self.loss_divides_by_num_items = divides
            if not divides:
                # No count from now on: transformers neither counts the items (a gather per step) nor scales
                # the loss by the ranks, and divides it by the accumulation steps as a per-batch mean.
                self.model_accepts_loss_kwargs = False
                self.loss_is_scaled_for_ga = False
            logger.info(
                "the loss of %s %s num_items_in_batch: %s",
                type(self.accelerator.unwrap_model(model)).__name__,
                "divides by" if divides else "does not divide by",
                "averaged over the tokens of all ranks and accumulation steps"
                if divides
                else "a mean per micro-batch, averaged over ranks and accumulation steps",
            )

    return DataParallelTrainer
