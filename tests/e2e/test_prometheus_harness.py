"""The Prometheus harness against a tiny prometheus_client server: scrape, label handling as our
ServiceMonitor and PodMonitor configure it, instant and range queries, rule evaluation, errors, stop."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_support import (
    PrometheusError,
    PrometheusServer,
    ScrapeTarget,
    operator_target,
    prometheus_config,
    trainer_target,
)


@pytest.fixture()
def exporter():
    """A /metrics server like the operator's: a per-job gauge carrying its own `namespace` label."""
    registry = CollectorRegistry()
    gauge = Gauge("finetune_test_job_step", "Step.", ["namespace", "name"], registry=registry)
    gauge.labels("team-a", "sentiment").set(7)
    counter = Counter("finetune_test_reports", "Reports.", registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}", counter
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_config_groups_targets_into_one_scrape_job_per_label_policy() -> None:
    config = prometheus_config(
        [
            operator_target("127.0.0.1:1"),
            trainer_target("127.0.0.1:2", "team-a", "x", "x-0-abc"),
            trainer_target("127.0.0.1:3", "team-a", "y", "y-0-def"),
        ],
        scrape_interval="1s",
    )
    jobs = {c["job_name"]: c for c in config["scrape_configs"]}
    assert jobs["finetune-operator"]["honor_labels"] is True and jobs["finetune-trainer"]["honor_labels"] is False
    assert [s["labels"]["name"] for s in jobs["finetune-trainer"]["static_configs"]] == ["x", "y"]
    assert config["global"]["scrape_interval"] == "1s"


def test_prometheus_scrapes_queries_evaluates_rules_and_stops(exporter, tmp_path: Path) -> None:
    address, counter = exporter
    targets = [
        # As the ServiceMonitor: the exporter's own `namespace` wins over the target's.
        operator_target(address),
        # As the PodMonitor without honorLabels: the target's `namespace` wins, the series' is renamed.
        ScrapeTarget(address, {"namespace": "finetune-system", "name": "op"}, job="plain"),
    ]
    rules = [
        {
            "name": "test",
            "rules": [
                {
                    "alert": "StepAboveFive",
                    "expr": "finetune_test_job_step > 5",
                    "labels": {"severity": "info"},
                    "annotations": {"summary": "{{ $labels.namespace }}/{{ $labels.name }} at {{ $value }}"},
                }
            ],
        }
    ]
    started = time.monotonic()
    with PrometheusServer(tmp_path / "prom", targets, rule_groups=rules) as prometheus:
        url = prometheus.url
        prometheus.wait_for_targets_up(timeout=30)
        series = prometheus.wait_for('finetune_test_job_step{job="finetune-operator"}', timeout=30)
        assert series[0]["metric"]["namespace"] == "team-a" and series[0]["value"][1] == "7"
        (plain,) = prometheus.query('finetune_test_job_step{job="plain"}')
        assert plain["metric"]["namespace"] == "finetune-system"
        assert plain["metric"]["exported_namespace"] == "team-a"

        counter.inc(3)
        prometheus.wait_for('finetune_test_reports_total{job="finetune-operator"} == 3', timeout=30)
        end = time.time()
        (history,) = prometheus.query_range('finetune_test_reports_total{job="finetune-operator"}', end - 60, end, "1s")
        values = [float(v) for _, v in history["values"]]
        assert values[-1] == 3 and values == sorted(values)

        assert prometheus.query("time()")[0]["value"][1]  # a scalar comes back as one series
        with pytest.raises(PrometheusError, match=r"sum\("):
            prometheus.query("sum(")

        deadline = time.monotonic() + 30
        while not (firing := [a for a in prometheus.alerts() if a["state"] == "firing"]):
            assert time.monotonic() < deadline, prometheus.alerts()
            time.sleep(0.2)
        summaries = sorted(a["annotations"]["summary"] for a in firing)
        assert summaries == ["finetune-system/op at 7", "team-a/sentiment at 7"]
    assert time.monotonic() - started < 30
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/-/ready", timeout=2)


def test_a_bad_config_fails_fast_with_prometheus_own_words(tmp_path: Path) -> None:
    server = PrometheusServer(tmp_path, [ScrapeTarget("127.0.0.1:1")], scrape_interval="not-a-duration")
    with pytest.raises(PrometheusError, match="not-a-duration"):
        server.start(timeout=20)
    assert server.process is None or server.process.poll() is not None
