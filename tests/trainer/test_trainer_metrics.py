"""The trainer's own /metrics: registry content, the HTTP server and when it starts, the throughput meter,
and assembly through reporting_callbacks."""

from __future__ import annotations

import logging
import math
import socket
import urllib.request

import pytest
from finetune_trainer.reporting.callbacks import ProgressCallback, TrainerMetricsCallback
from finetune_trainer.reporting.environment import reporting_callbacks
from finetune_trainer.reporting.gpu import GpuSample
from finetune_trainer.reporting.prometheus import TrainerMetrics, serve
from finetune_trainer.reporting.throughput import ThroughputMeter
from prometheus_client.parser import text_string_to_metric_families
from test_progress_helpers import free_port, tiny_trainer
from transformers import TrainerControl, TrainerState


def samples(text: str) -> dict[str, float]:
    """name -> value of every sample, less client_python's `_created` timestamps of counters."""
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def exposition(metrics: TrainerMetrics) -> dict[str, float]:
    from prometheus_client import generate_latest

    return samples(generate_latest(metrics.registry).decode())


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return samples(response.read().decode())


class FixedGpu:
    def sample(self):
        return GpuSample(count=1, utilization_ratio=0.5, memory_used_bytes=1024, memory_total_bytes=4096)


def test_only_known_gauges_are_exposed_with_the_protocol_names():
    metrics = TrainerMetrics()
    assert exposition(metrics) == {  # a loss of 0 before the first log would be a lie: absent instead
        "finetune_trainer_progress_reports_sent_total": 0.0,
        "finetune_trainer_progress_reports_failed_total": 0.0,
    }
    metrics.set(
        step=3,
        total_steps=10,
        epoch=0.5,
        train_loss=0.7,
        eval_loss=0.6,
        learning_rate=1e-4,
        samples_per_second=8.0,
        tokens_per_second=100.0,
    )
    metrics.reports_sent.inc()
    assert exposition(metrics) == {
        "finetune_trainer_step": 3.0,
        "finetune_trainer_total_steps": 10.0,
        "finetune_trainer_epoch": 0.5,
        "finetune_trainer_train_loss": 0.7,
        "finetune_trainer_eval_loss": 0.6,
        "finetune_trainer_learning_rate": 1e-4,
        "finetune_trainer_samples_per_second": 8.0,
        "finetune_trainer_tokens_per_second": 100.0,
        "finetune_trainer_progress_reports_sent_total": 1.0,
        "finetune_trainer_progress_reports_failed_total": 0.0,
    }


def test_gpu_gauges_are_sampled_at_scrape_time():
    values = exposition(TrainerMetrics(gpu=FixedGpu()))
    assert values["finetune_trainer_gpu_utilization_ratio"] == 0.5
    assert values["finetune_trainer_gpu_memory_used_bytes"] == 1024


def test_non_finite_values_keep_the_last_good_one_and_unknown_names_are_refused():
    metrics = TrainerMetrics()
    metrics.set(train_loss=0.5)
    metrics.set(train_loss=math.nan, eval_loss=None)
    assert exposition(metrics)["finetune_trainer_train_loss"] == 0.5
    assert "finetune_trainer_eval_loss" not in exposition(metrics)
    with pytest.raises(KeyError, match="loss_train"):
        metrics.set(loss_train=1.0)


def test_metrics_are_served_over_http_and_a_later_run_in_the_process_takes_the_port_over():
    first, second = TrainerMetrics(), TrainerMetrics()
    first.set(step=7)
    second.set(step=1)
    port = free_port()
    server = serve(first, port, addr="127.0.0.1")
    try:
        assert scrape(port)["finetune_trainer_step"] == 7.0
        server = serve(second, port, addr="127.0.0.1")
        assert server is not None and scrape(port)["finetune_trainer_step"] == 1.0
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_held_by_another_process_only_warns(caplog):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="finetune_trainer"):
            assert serve(TrainerMetrics(), port, addr="127.0.0.1") is None
    assert f"port {port} unavailable" in caplog.text


def test_port_zero_disables_and_an_impossible_port_only_warns(caplog):
    assert serve(TrainerMetrics(), 0) is None
    with caplog.at_level(logging.WARNING, logger="finetune_trainer"):
        assert serve(TrainerMetrics(), 70000) is None
    assert "70000" in caplog.text


def test_metrics_callback_never_raises_into_training_and_logs_once(caplog):
    callback = TrainerMetricsCallback(TrainerMetrics())
    broken_args = object()  # no batch size: the throughput update fails
    with caplog.at_level(logging.ERROR, logger="finetune_trainer"):
        for _ in range(3):
            callback.on_step_end(broken_args, TrainerState(global_step=1), TrainerControl())
    assert caplog.text.count("trainer metrics update failed") == 1


# ---- throughput ----


def test_meter_measures_over_the_window_excluding_the_first_step():
    meter = ThroughputMeter(window=3)
    meter.record(100.0, 1, 0, samples_per_step=8)  # end of the slow first step
    assert meter.samples_per_second is None
    for i in range(2, 8):
        meter.record(100.0 + (i - 1) * 0.5, i, 0, samples_per_step=8)
    assert meter.samples_per_second == pytest.approx(16.0)
    assert meter.tokens_per_second is None


def test_meter_ignores_repeated_steps_and_restart_keeps_the_last_rate():
    meter = ThroughputMeter()
    meter.record(0.0, 1, 100, 4)
    meter.record(1.0, 2, 300, 4)
    meter.record(5.0, 2, 300, 4)  # same step again (another event at that step): not a new point
    assert (meter.samples_per_second, meter.tokens_per_second) == (4.0, 200.0)
    meter.restart()
    meter.record(60.0, 3, 400, 4)  # after an evaluation: the pause must not count as slow training
    assert (meter.samples_per_second, meter.tokens_per_second) == (4.0, 200.0)
    meter.record(62.0, 4, 500, 4)
    assert (meter.samples_per_second, meter.tokens_per_second) == (2.0, 50.0)


# ---- when the server starts ----


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stop(callback: TrainerMetricsCallback) -> None:
    if callback.server is not None:
        callback.server.shutdown()
        callback.server.server_close()


def test_the_server_starts_in_on_train_begin_not_before_and_only_once():
    port = free_port()
    callback = TrainerMetricsCallback(TrainerMetrics(), port)
    assert callback.server is None and not listening(port)  # constructing starts nothing
    try:
        callback.on_train_begin(None, TrainerState(global_step=0, max_steps=5), TrainerControl())
        server = callback.server
        assert server is not None and listening(port)
        assert scrape(port)["finetune_trainer_total_steps"] == 5.0
        callback.on_train_begin(None, TrainerState(global_step=2, max_steps=5), TrainerControl())  # train() again
        assert callback.server is server
    finally:
        stop(callback)


def test_only_the_main_process_of_a_pod_serves_and_updates():
    port = free_port()
    callback = TrainerMetricsCallback(TrainerMetrics(), port)
    other = TrainerState(global_step=1, max_steps=5, is_local_process_zero=False, is_world_process_zero=False)
    callback.on_train_begin(None, other, TrainerControl())
    callback.on_log(None, other, TrainerControl(), logs={"loss": 0.5})
    assert callback.server is None and not listening(port)  # the pod's first process holds the port
    assert callback.metrics.values() == {}


def test_port_zero_serves_nothing_and_a_failing_start_never_reaches_training(monkeypatch, caplog):
    callback = TrainerMetricsCallback(TrainerMetrics(), 0)
    callback.on_train_begin(None, TrainerState(max_steps=5), TrainerControl())
    assert callback.server is None and callback.metrics.values()["total_steps"] == 5.0

    def broken(*args, **kwargs):
        raise RuntimeError("no server today")

    monkeypatch.setattr("finetune_trainer.reporting.callbacks.serve", broken)
    callback = TrainerMetricsCallback(TrainerMetrics(), free_port())
    with caplog.at_level(logging.ERROR, logger="finetune_trainer"):
        callback.on_train_begin(None, TrainerState(max_steps=5), TrainerControl())
    assert callback.server is None and "trainer metrics update failed" in caplog.text
    assert callback.metrics.values()["total_steps"] == 5.0  # the numbers are still kept


# ---- assembly and a real run ----


def test_reporting_callbacks_without_url_gives_only_the_metrics_callback():
    callbacks = reporting_callbacks({"FINETUNE_METRICS_PORT": "0"})
    assert [type(c) for c in callbacks] == [TrainerMetricsCallback]
    assert callbacks[0].port == 0 and callbacks[0].server is None


def test_reporting_callbacks_read_the_port_and_start_no_server_yet():
    port = free_port()
    [callback] = reporting_callbacks({"FINETUNE_METRICS_PORT": str(port)})
    assert callback.port == port and callback.server is None and not listening(port)
    [default] = reporting_callbacks({})
    assert default.port == 9400


def test_reporting_callbacks_with_url_reads_the_protocol_environment():
    environ = {
        "FINETUNE_PROGRESS_URL": "http://op.svc:8081/progress/v1/namespaces/ns/finetunejobs/job",
        "FINETUNE_PROGRESS_TOKEN_FILE": "/var/run/secrets/finetune/progress/token",
        "FINETUNE_PROGRESS_INTERVAL_SECONDS": "2.5",
        "FINETUNE_METRICS_PORT": "0",
        "HOSTNAME": "job-worker-0-xyz",
    }
    metrics_callback, progress = reporting_callbacks(environ)
    assert isinstance(metrics_callback, TrainerMetricsCallback) and isinstance(progress, ProgressCallback)
    assert progress.interval_seconds == 2.5 and progress.snapshot.pod == "job-worker-0-xyz"
    assert progress.sender.url == environ["FINETUNE_PROGRESS_URL"]
    assert progress.sender.token_file == environ["FINETUNE_PROGRESS_TOKEN_FILE"]
    assert progress.sender.metrics is metrics_callback.metrics  # the counters land on /metrics


def test_bad_environment_values_warn_and_fall_back(caplog):
    with caplog.at_level(logging.WARNING, logger="finetune_trainer"):
        callbacks = reporting_callbacks({"FINETUNE_PROGRESS_URL": "op.svc:8081/x", "FINETUNE_METRICS_PORT": "0"})
        assert [type(c) for c in callbacks] == [TrainerMetricsCallback]
        _, progress = reporting_callbacks(
            {
                "FINETUNE_PROGRESS_URL": "http://op/x",
                "FINETUNE_PROGRESS_INTERVAL_SECONDS": "often",
                "FINETUNE_METRICS_PORT": "0",
            }
        )
        assert progress.interval_seconds == 10.0
        [callback] = reporting_callbacks({"FINETUNE_METRICS_PORT": "-1"})
        assert callback.port == 9400
    assert "FINETUNE_PROGRESS_URL" in caplog.text and "FINETUNE_PROGRESS_INTERVAL_SECONDS='often'" in caplog.text
    assert "FINETUNE_METRICS_PORT='-1'" in caplog.text


def test_a_training_run_shows_its_step_loss_and_counters_on_metrics(tmp_path):
    port = free_port()
    [callback] = reporting_callbacks({"FINETUNE_METRICS_PORT": str(port)})
    try:
        tiny_trainer(tmp_path, [callback], max_steps=6, evaluate_every=6).train()
        values = scrape(port)  # the server outlives training
    finally:
        stop(callback)
    assert values["finetune_trainer_step"] == 6.0 and values["finetune_trainer_total_steps"] == 6.0
    assert values["finetune_trainer_train_loss"] > 0 and values["finetune_trainer_eval_loss"] > 0
    assert values["finetune_trainer_learning_rate"] >= 0 and values["finetune_trainer_samples_per_second"] > 0
    assert values["finetune_trainer_epoch"] > 0
    assert values["finetune_trainer_progress_reports_sent_total"] == 0.0  # no URL: nothing reported
