"""The trainer's own Prometheus `/metrics` (docs/progress.md, port 9400): its registry and HTTP server.

Values live in a dedicated CollectorRegistry, never the process-global one, so tests and embedding
applications see only these series. Gauges appear once their value is known (a train loss of 0 before
the first log would be a lie); GPU gauges are read from NVML at scrape time. There are no job or pod
labels: the PodMonitor's scrape adds them.
"""

from __future__ import annotations

import logging
import math

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily

from finetune_trainer.reporting.gpu import GpuSampler

logger = logging.getLogger("finetune_trainer")

DEFAULT_METRICS_PORT = 9400

# value key -> (metric name, help)
GAUGES = {
    "step": ("finetune_trainer_step", "Global optimizer step."),
    "total_steps": ("finetune_trainer_total_steps", "Planned optimizer steps (0 while unknown)."),
    "epoch": ("finetune_trainer_epoch", "Fractional epoch."),
    "train_loss": ("finetune_trainer_train_loss", "Latest logged training loss."),
    "eval_loss": ("finetune_trainer_eval_loss", "Latest evaluation loss."),
    "learning_rate": ("finetune_trainer_learning_rate", "Current learning rate."),
    "samples_per_second": (
        "finetune_trainer_samples_per_second",
        "Measured training samples per second, all ranks together.",
    ),
    "tokens_per_second": (
        "finetune_trainer_tokens_per_second",
        "Measured input tokens per second, all ranks together (when the Trainer counts tokens).",
    ),
}


class TrainerMetrics:
    """The latest training numbers and the progress-report counters, in one registry."""

    def __init__(self, gpu: GpuSampler | None = None, registry: CollectorRegistry | None = None):
        self.registry = CollectorRegistry() if registry is None else registry
        self.gpu = gpu
        self._values: dict[str, float] = {}
        self.reports_sent = Counter(
            "finetune_trainer_progress_reports_sent", "Progress reports the operator accepted.", registry=self.registry
        )
        self.reports_failed = Counter(
            "finetune_trainer_progress_reports_failed",
            "Progress report attempts that were not accepted (connection error, timeout or non-2xx answer).",
            registry=self.registry,
        )
        self.registry.register(_LatestValues(self))

    def set(self, **values: float | None) -> None:
        """Record the latest values by GAUGES key; None and non-finite values are ignored."""
        for key, value in values.items():
            if key not in GAUGES:
                raise KeyError(f"unknown trainer metric {key!r}; known: {sorted(GAUGES)}")
            if value is not None and math.isfinite(value):
                self._values[key] = float(value)

    def values(self) -> dict[str, float]:
        return dict(self._values)


class _LatestValues:
    """A collector yielding the known gauges, plus GPU gauges sampled now."""

    def __init__(self, metrics: TrainerMetrics):
        self._metrics = metrics

    def collect(self):
        for key, value in self._metrics.values().items():
            name, help_text = GAUGES[key]
            yield GaugeMetricFamily(name, help_text, value=value)
        sample = self._metrics.gpu.sample() if self._metrics.gpu is not None else None
        if sample is not None:
            yield GaugeMetricFamily(
                "finetune_trainer_gpu_utilization_ratio",
                "Mean GPU utilization of this node (0..1).",
                value=sample.utilization_ratio,
            )
            yield GaugeMetricFamily(
                "finetune_trainer_gpu_memory_used_bytes",
                "GPU memory in use on this node.",
                value=sample.memory_used_bytes,
            )


# port -> the server this process started on it. A process that trains more than once (tests, notebooks
# calling run.main again) hands the port to its newest run instead of leaking a server per run.
_servers: dict[int, object] = {}


def serve(metrics: TrainerMetrics, port: int, addr: str = "0.0.0.0"):
    """Serve /metrics on `port`; returns the server, or None when disabled (0) or the port is taken."""
    if port == 0:
        return None
    previous = _servers.pop(port, None)
    if previous is not None:
        previous.shutdown()
        previous.server_close()
    try:
        server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
    except (OSError, OverflowError) as error:  # OverflowError: a port above 65535
        # Another process of this pod (or anything else) holds the port: training matters more.
        logger.warning(
            "trainer /metrics not served: port %s unavailable (%s); set FINETUNE_METRICS_PORT to a free port or 0",
            port,
            error,
        )
        return None
    _servers[port] = server
    logger.info("trainer /metrics served on port %s", server.server_port)
    return server
