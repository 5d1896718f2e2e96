"""The transformers TrainerCallbacks that report: one keeps the trainer's /metrics, one sends progress reports.

Both are shaped like transformers' TensorBoardCallback: each acts on one process only (the /metrics one
on the main process of its pod, the progress one on world rank 0), sets up lazily, reports numbers only
and never raises into training.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from transformers import TrainerCallback

from finetune_trainer.reporting.gpu import GpuSampler
from finetune_trainer.reporting.prometheus import TrainerMetrics, serve
from finetune_trainer.reporting.report import ProgressSnapshot, build_report, eval_metrics_from, finite_number
from finetune_trainer.reporting.sender import ReportSender
from finetune_trainer.reporting.throughput import ThroughputMeter, samples_per_step

logger = logging.getLogger("finetune_trainer")

DEFAULT_INTERVAL_SECONDS = 10.0
FLUSH_SECONDS = 10.0  # how long the end of training waits for the final report


class TrainerMetricsCallback(TrainerCallback):
    """Keeps TrainerMetrics current and serves them on `port` (0: not served).

    The /metrics server starts in on_train_begin, once, and only in the main process of this pod
    (`state.is_local_process_zero`): every trainer pod is scraped on its own port (the PodMonitor
    adds its rank), and the pod's other processes would find the port taken. The other processes
    do nothing. A port already in use only logs a warning (see `serve`); the server outlives
    training, so the final evaluation's numbers are still scraped.
    """

    def __init__(self, metrics: TrainerMetrics, port: int = 0, *, clock: Callable[[], float] = time.monotonic):
        self.metrics = metrics
        self.port = port
        self.server = None  # the /metrics HTTP server, once on_train_begin has started it
        self.meter = ThroughputMeter()
        self._clock = clock
        self._initialized = False
        self._failed = False

    def setup(self) -> None:
        """Start the /metrics server; called once, from the first on_train_begin (as WandbCallback.setup)."""
        self._initialized = True
        self.server = serve(self.metrics, self.port)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_local_process_zero:
            return
        if not self._initialized:
            self._guard(self.setup)
        self._guard(lambda: self._position(state))

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_local_process_zero:
            return

        def update():
            self.meter.record(
                self._clock(), state.global_step, state.num_input_tokens_seen or 0, samples_per_step(args)
            )
            self._position(state)
            self.metrics.set(
                samples_per_second=self.meter.samples_per_second, tokens_per_second=self.meter.tokens_per_second
            )

        self._guard(update)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_local_process_zero:
            return
        logs = logs or {}
        self._guard(
            lambda: self.metrics.set(
                train_loss=finite_number(logs.get("loss")), learning_rate=finite_number(logs.get("learning_rate"))
            )
        )

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.meter.restart()  # evaluation time is not training time
        if not state.is_local_process_zero:
            return
        self._guard(lambda: self.metrics.set(eval_loss=finite_number((metrics or {}).get("eval_loss"))))

    def on_save(self, args, state, control, **kwargs):
        self.meter.restart()

    def _position(self, state) -> None:
        self.metrics.set(step=state.global_step, total_steps=state.max_steps, epoch=state.epoch)

    def _guard(self, update: Callable[[], None]) -> None:
        try:
            update()
        except Exception:
            if not self._failed:
                logger.exception("trainer metrics update failed (training continues; logged once)")
            self._failed = True


class ProgressCallback(TrainerCallback):
    """Reports rank 0's progress: at begin, evaluate, save and end, and at most once per interval
    from on_log/on_step_end. Never raises into training and never blocks it, except for up to
    `flush_seconds` at the end of training so the final report lands."""

    def __init__(
        self,
        sender: ReportSender,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        *,
        pod: str | None = None,
        gpu: GpuSampler | None = None,
        flush_seconds: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.sender = sender
        self.interval_seconds = interval_seconds
        self.flush_seconds = flush_seconds
        self.gpu = gpu
        self.snapshot = ProgressSnapshot(pod=pod)
        self.meter = ThroughputMeter()
        self._clock, self._wall_clock = clock, wall_clock
        self._last_report: float | None = None
        self._failed = False

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._safely(lambda: self._report("begin", state))

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return

        def step():
            self.meter.record(
                self._clock(), state.global_step, state.num_input_tokens_seen or 0, samples_per_step(args)
            )
            if self.snapshot.first_step_time is None and state.global_step > 0:
                self.snapshot.first_step_time = self._wall_clock()
            # When a log follows at this step, let on_log report: it carries the fresh loss.
            if self._due() and not control.should_log:
                self._report("interval", state)

        self._safely(step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return

        def log():
            logs_ = logs or {}
            if finite_number(logs_.get("loss")) is not None:
                self.snapshot.loss = finite_number(logs_["loss"])
            if finite_number(logs_.get("learning_rate")) is not None:
                self.snapshot.learning_rate = finite_number(logs_["learning_rate"])
            if self._due():
                self._report("log", state)

        self._safely(log)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.meter.restart()  # evaluation time is not training time
        if not state.is_world_process_zero:
            return

        def evaluate():
            self.snapshot.eval_metrics = eval_metrics_from(metrics)
            self._report("evaluate", state)

        self._safely(evaluate)

    def on_save(self, args, state, control, **kwargs):
        self.meter.restart()
        if not state.is_world_process_zero:
            return

        def save():
            # Trainer writes OUTPUT_DIR/checkpoint-STEP; callbacks registered before this one (the
            # COMPLETE marker) have run, so the folder is whole by now.
            folder = os.path.abspath(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
            if os.path.isdir(folder):
                self.snapshot.checkpoint = (state.global_step, folder)
            self._report("save", state)

        self._safely(save)

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return

        def end():
            self._report("end", state)
            if not self.sender.flush(self.flush_seconds):
                logger.warning(
                    "final progress report not delivered within %.0f s; training goes on without it", self.flush_seconds
                )

        self._safely(end)

    def _due(self) -> bool:
        return self._last_report is None or self._clock() - self._last_report >= self.interval_seconds

    def _report(self, event: str, state) -> None:
        snapshot = self.snapshot
        snapshot.step, snapshot.total_steps, snapshot.epoch = state.global_step, state.max_steps, state.epoch
        snapshot.samples_per_second, snapshot.tokens_per_second = (
            self.meter.samples_per_second,
            self.meter.tokens_per_second,
        )
        gpu = self.gpu.sample() if self.gpu is not None else None
        report = build_report(event, snapshot, at=self._wall_clock(), gpu=gpu)
        self._last_report = self._clock()
        self.sender.submit(report)

    def _safely(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:
            if not self._failed:
                logger.exception("progress reporting failed (training continues; logged once)")
            self._failed = True
