"""The real Prometheus scrapes the operator and a trainer during sandbox jobs; every dashboard query
and every alert rule's selectors then return data (over the run's time range), and every alert
expression evaluates without error."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from finetune_sandbox.cluster import Sandbox, SandboxThread
from prometheus_support import (
    DEFAULT_VARIABLES,
    PrometheusServer,
    dashboard_expressions,
    dashboard_panels,
    free_port,
    operator_target,
    rule_expressions,
    rule_groups,
    selectors,
    substitute_variables,
    trainer_target,
)
from sandbox_support import Cluster, finetunejob, progress_endpoint, write_sentiment_csv, write_tiny_text_classifier

pytestmark = pytest.mark.e2e

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"
NAMESPACE = "observed"
# Series only a real GPU produces: the trainer reads them from NVML, which this CPU machine lacks.
NEEDS_A_GPU = {"finetune_trainer_gpu_utilization_ratio", "finetune_trainer_gpu_memory_used_bytes"}


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory):
    """A sandbox whose single trainer serves /metrics on a known port, scraped with the operator."""
    trainer_port = free_port()
    sandbox = Sandbox(
        tmp_path_factory.mktemp("observed-sandbox"), operator_env={"FINETUNE_TRAINER_METRICS_PORT": str(trainer_port)}
    )
    runner = SandboxThread(sandbox)
    runner.start()
    cluster = Cluster(sandbox, runner)
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    targets = [
        operator_target(f"127.0.0.1:{sandbox.metrics_port}"),
        trainer_target(f"127.0.0.1:{trainer_port}", NAMESPACE, "watched", "watched-0"),
    ]
    prometheus = PrometheusServer(tmp_path_factory.mktemp("prometheus"), targets, rule_groups=rule_groups(rule))
    prometheus.start()
    try:
        yield cluster, prometheus, rule
    finally:
        prometheus.stop()
        runner.stop()


def selector_text(selector) -> str:
    matchers = ",".join(f"{label}{op}{json.dumps(value)}" for label, op, value in selector.matchers)
    return f"{selector.metric}{{{matchers}}}" if matchers else selector.metric


def post_gpu_report(cluster: Cluster, name: str, step: int) -> None:
    """The one fake here is the GPU: a report as rank 0 on a GPU node would send it, with the job's token."""
    url, tls, token = progress_endpoint(cluster, NAMESPACE, name)
    report = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "event": "interval",
        "step": step,
        "totalSteps": step,
        "gpu": {"count": 1, "utilizationRatio": 0.82, "memoryUsedBytes": 30 * 2**30, "memoryTotalBytes": 80 * 2**30},
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(report).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert urllib.request.urlopen(request, timeout=10, context=tls).status == 204


def test_every_dashboard_query_and_alert_selector_returns_data(observed) -> None:
    cluster, prometheus, rule = observed
    start = time.time()
    cluster.core.create_namespace({"metadata": {"name": NAMESPACE}})
    write_tiny_text_classifier(cluster.pvc_dir(NAMESPACE, "models") / "tiny-bert")
    write_sentiment_csv(cluster.pvc_dir(NAMESPACE, "datasets") / "sentiment" / "train.csv")
    write_sentiment_csv(cluster.pvc_dir(NAMESPACE, "datasets") / "broken" / "train.csv", label_column="stars")

    # A failure (failures by reason), a queued job admitted later (queue wait), and the watched job.
    cluster.apply(finetunejob("broken", NAMESPACE, dataset={"train": "pvc://datasets/broken/train.csv"}))
    cluster.apply(finetunejob("queued", NAMESPACE, scheduling={"queueName": "team-q"}, hyperparameters={"maxSteps": 4}))
    cluster.wait_phase(NAMESPACE, "broken", "Failed", timeout=180)
    cluster.wait_phase(NAMESPACE, "queued", "Queued", timeout=60)
    cluster.batch.patch_namespaced_job("queued", NAMESPACE, {"spec": {"suspend": False}})
    cluster.wait_phase(NAMESPACE, "queued", "Succeeded", timeout=180)

    # A small search (trials by state, best objective value); before the watched job, whose trainer must
    # have the sandbox's trainer metrics port to itself.
    cluster.apply(
        finetunejob(
            "searched",
            NAMESPACE,
            hyperparameters={"maxSteps": 4, "evalStrategy": "steps", "evalSteps": 2},
            hyperparameterSearch={
                "algorithm": "grid",
                "objective": {"metric": "eval_loss"},
                "maxTrials": 2,
                "parallelTrials": 1,
                "parameters": {"learningRate": {"values": [1e-3, 2e-3]}},
            },
        )
    )
    cluster.wait_phase(NAMESPACE, "searched", "Succeeded", timeout=240)
    cluster.apply(
        finetunejob(
            "watched", NAMESPACE, hyperparameters={"maxSteps": 1500, "batchSize": 4}, output={"checkpointSteps": 500}
        )
    )
    cluster.wait_phase(NAMESPACE, "watched", "Running", timeout=120)
    prometheus.wait_for(f'finetune_trainer_step{{namespace="{NAMESPACE}",name="watched"}}', timeout=120)
    cluster.wait_phase(NAMESPACE, "watched", "Succeeded", timeout=300)
    post_gpu_report(cluster, "watched", 1500)
    prometheus.wait_for('finetune_operator_job_gpu_utilization_ratio{name="watched"}', timeout=30)
    time.sleep(3)  # a few more scrapes so rates have two points everywhere
    end = time.time()

    empty = []
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    for expr in dashboard_expressions(dashboard, {"namespace": NAMESPACE, "job": ".+", "__rate_interval": "15s"}):
        series = prometheus.query_range(expr, start, end, 1)
        if not series and not any(sel.metric in NEEDS_A_GPU for sel in selectors(expr)):
            empty.append(expr)
        if any(sel.metric in NEEDS_A_GPU for sel in selectors(expr)):
            assert not series, f"{expr} has data on a CPU machine: move it out of NEEDS_A_GPU"
    assert empty == [], "dashboard queries without data:\n" + "\n".join(empty)

    for expr in rule_expressions(rule):
        prometheus.query_range(expr, start, end, 1)  # evaluates without error
        for selector in selectors(expr):
            text = selector_text(selector)
            assert prometheus.query_range(text, start, end, 1), f"alert selector {text} has no data"

    dump = os.environ.get("FINETUNE_DASHBOARD_DATA")
    if dump:
        # Real data for docs/render_dashboard.py: every panel's series over this run.
        variables = {**DEFAULT_VARIABLES, "namespace": NAMESPACE}
        panels = []
        for panel in dashboard_panels(dashboard):
            lines = []
            for target in panel.get("targets", []):
                expr = substitute_variables(target["expr"], variables)
                for series in prometheus.query_range(expr, start, end, 1):
                    lines.append(
                        {
                            "legend": target.get("legendFormat", ""),
                            "labels": series["metric"],
                            "values": [[float(t), float(v)] for t, v in series["values"]],
                        }
                    )
            panels.append(
                {
                    "title": panel.get("title", ""),
                    "type": panel.get("type"),
                    "unit": panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""),
                    "lines": lines,
                }
            )
        Path(dump).write_text(json.dumps({"start": start, "end": end, "panels": panels}))
