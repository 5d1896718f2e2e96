"""The reporting callbacks of a run, from the variables the operator sets (docs/progress.md, Transport)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping

from transformers import TrainerCallback

from finetune_trainer.reporting.callbacks import DEFAULT_INTERVAL_SECONDS, ProgressCallback, TrainerMetricsCallback
from finetune_trainer.reporting.gpu import GpuSampler
from finetune_trainer.reporting.prometheus import DEFAULT_METRICS_PORT, TrainerMetrics
from finetune_trainer.reporting.sender import ReportSender

logger = logging.getLogger("finetune_trainer")

ENV_URL = "FINETUNE_PROGRESS_URL"
ENV_TOKEN_FILE = "FINETUNE_PROGRESS_TOKEN_FILE"
ENV_CA_FILE = "FINETUNE_PROGRESS_CA_FILE"
ENV_INTERVAL = "FINETUNE_PROGRESS_INTERVAL_SECONDS"
ENV_METRICS_PORT = "FINETUNE_METRICS_PORT"


def reporting_callbacks(environ: Mapping[str, str] | None = None) -> list[TrainerCallback]:
    """The trainer's /metrics callback and, when FINETUNE_PROGRESS_URL is set, the progress reporter.

    /metrics is served on FINETUNE_METRICS_PORT (default 9400, 0 disables) from on_train_begin, by the
    main process of the pod; progress is reported by world rank 0. Nothing starts here: the callbacks
    set themselves up when training begins. Append these after CompleteCheckpointCallback.
    """
    environ = os.environ if environ is None else environ
    gpu = GpuSampler(environ=environ)
    metrics = TrainerMetrics(gpu=gpu)
    port = _env_number(environ, ENV_METRICS_PORT, DEFAULT_METRICS_PORT, int, example="9400")
    callbacks: list[TrainerCallback] = [TrainerMetricsCallback(metrics, port)]

    url = environ.get(ENV_URL, "").strip()
    if url and not url.startswith(("http://", "https://")):
        logger.warning(
            "%s=%r is not an http(s) URL (e.g. https://finetune-operator.finetune-system.svc:8081/progress/v1/...): progress not reported",
            ENV_URL,
            url,
        )
    elif url:
        interval = max(0.0, _env_number(environ, ENV_INTERVAL, DEFAULT_INTERVAL_SECONDS, float, example="10"))
        sender = ReportSender(
            url, environ.get(ENV_TOKEN_FILE) or None, ca_file=environ.get(ENV_CA_FILE) or None, metrics=metrics
        )
        callbacks.append(ProgressCallback(sender, interval, pod=environ.get("HOSTNAME") or None, gpu=gpu))
    return callbacks


def _env_number(environ: Mapping[str, str], name: str, default, kind, *, example: str):
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
        if not math.isfinite(value) or value < 0:
            raise ValueError
        return value
    except ValueError:
        logger.warning("%s=%r is not a non-negative %s (e.g. %s); using %s", name, raw, kind.__name__, example, default)
        return default
