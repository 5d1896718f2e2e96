"""The operator's Prometheus metrics (names: docs/progress.md).

Per-job series are not stored in prometheus_client metrics: a collector renders them at scrape time
from the job records (progress.records.JobRecord), so a deleted job's series vanish with its record
and cannot leak. Lifecycle counters and histograms are ordinary prometheus_client metrics.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .progress.records import JobRecord
from .reasons import PHASES

PREFIX = "finetune_operator"
# Seconds from creation to running / first step / admission: minutes to hours on a busy cluster.
WAIT_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)


LABELS = ["namespace", "name"]
# The per-job gauges: finetune_operator_job_<key>.
JOB_GAUGES = {
    "progress_ratio": "Training progress: step / total steps (0-1).",
    "step": "Global optimizer step last reported.",
    "total_steps": "Planned optimizer steps.",
    "epoch": "Fractional epoch last reported.",
    "train_loss": "Latest training loss.",
    "eval_loss": "Latest evaluation loss.",
    "samples_per_second": "Training throughput reported by the trainer.",
    "eta_seconds": "Estimated seconds to the end of training, from the measured step rate.",
    "last_report_timestamp_seconds": "Unix time of the last accepted progress report.",
    "gpu_utilization_ratio": "GPU utilisation of rank 0's node (0-1).",
    "gpu_memory_used_bytes": "GPU memory used on rank 0's node.",
    "stalled": "1 while the job's Stalled condition is True.",
}


class JobSeriesCollector(Collector):
    """Per-job gauges and jobs-by-phase, computed from the live records at each scrape."""

    def __init__(self, records: Callable[[], Iterable[JobRecord]]) -> None:
        self._records = records

    def describe(self) -> list:
        # No describe-time series: the registry must not call collect() at registration.
        return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauges = {key: GaugeMetricFamily(f"{PREFIX}_job_{key}", doc, labels=LABELS) for key, doc in JOB_GAUGES.items()}
        phase_gauge = GaugeMetricFamily(
            f"{PREFIX}_job_phase", "1 for the job's current phase, 0 for the others.", labels=[*LABELS, "phase"]
        )
        jobs_by_phase = GaugeMetricFamily(
            f"{PREFIX}_jobs", "FineTuneJobs known to the operator, by phase.", labels=["phase"]
        )
        search_trials = GaugeMetricFamily(
            f"{PREFIX}_search_trials", "Trials of a hyperparameter search, by state.", labels=[*LABELS, "state"]
        )
        search_best = GaugeMetricFamily(
            f"{PREFIX}_search_best_objective",
            "The objective value of a search's best trial so far.",
            labels=[*LABELS, "metric"],
        )
        tally: Tally[str] = Tally()
        for record in list(self._records()):
            key = [record.namespace, record.name]
            if record.parent is None:  # a search's trials have the per-job series, but are no FineTuneJobs
                tally[record.phase] += 1
            for state, count in (record.trial_counts or {}).items():
                if state != "total":
                    search_trials.add_metric([*key, state], float(count))
            if record.best_objective is not None:
                search_best.add_metric([*key, record.best_objective[0]], record.best_objective[1])
            for phase in PHASES:
                phase_gauge.add_metric([*key, phase], 1.0 if record.phase == phase else 0.0)
            for name, value in _job_values(record).items():
                if value is not None:
                    gauges[name].add_metric(key, float(value))
        for phase in PHASES:
            jobs_by_phase.add_metric([phase], float(tally.get(phase, 0)))
        yield from gauges.values()
        yield phase_gauge
        yield jobs_by_phase
        yield search_trials
        yield search_best


def _job_values(record: JobRecord) -> dict[str, float | int | None]:
    """One job's gauge values (None: no such value yet, no sample)."""
    values: dict[str, float | int | None] = {"stalled": 1.0 if record.stalled else 0.0}
    report = record.report
    if report is None:
        return values
    values.update(
        progress_ratio=record.progress_ratio(),
        step=report.step,
        total_steps=report.totalSteps,
        epoch=report.epoch,
        train_loss=report.loss,
        eval_loss=report.evalMetrics.get("eval_loss"),
        samples_per_second=report.samplesPerSecond,
        eta_seconds=record.eta_seconds(),
        last_report_timestamp_seconds=record.received.timestamp() if record.received else None,
        gpu_utilization_ratio=report.gpu.utilizationRatio if report.gpu else None,
        gpu_memory_used_bytes=report.gpu.memoryUsedBytes if report.gpu else None,
    )
    return values


class OperatorMetrics:
    """Every metric the operator exports, in one registry of its own (tests make fresh ones)."""

    def __init__(self, records: Callable[[], Iterable[JobRecord]], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.registry.register(JobSeriesCollector(records))
        r = self.registry
        self.time_to_running = Histogram(
            f"{PREFIX}_time_to_running_seconds",
            "Seconds from a FineTuneJob's creation until all its pods ran.",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.time_to_first_step = Histogram(
            f"{PREFIX}_time_to_first_step_seconds",
            "Seconds from a FineTuneJob's creation to its first optimizer step.",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Seconds a queued FineTuneJob waited for Kueue admission.",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.failures = Counter(
            f"{PREFIX}_job_failures", "FineTuneJobs that failed, by reason.", ["reason"], registry=r
        )
        self.retries = Counter(f"{PREFIX}_job_retries", "Failed trainer pods that were retried.", registry=r)
        self.gpu_seconds = Counter(f"{PREFIX}_gpu_seconds", "GPU-seconds consumed by running FineTuneJobs.", registry=r)
        self.reconcile_errors = Counter(f"{PREFIX}_reconcile_errors", "Reconciles that raised an error.", registry=r)
        self.status_writes = Counter(
            f"{PREFIX}_status_writes", "Status patches sent to the API server.", ["kind"], registry=r
        )
        self.reports = Counter(
            f"{PREFIX}_progress_reports",
            "Progress reports received, by result and reason.",
            ["result", "reason"],
            registry=r,
        )
