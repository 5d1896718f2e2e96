"""A real Prometheus server on loopback for tests, and the PromQL our dashboard and alerts ship.

`PrometheusServer` runs Debian's `prometheus` binary (apt-get install prometheus) with every path
under a test's tmp dir, scraping static targets every second, so a test can scrape a sandbox job's
operator and trainer and then run each dashboard and alert expression against the result.
The pure helpers (`dashboard_expressions`, `rule_expressions`, `metric_names`, ...) need no server.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# What Grafana would put in for its built-in variables, at a 1 s scrape interval.
DEFAULT_VARIABLES = {
    "namespace": ".+",
    "job": ".+",
    "__rate_interval": "15s",
    "__interval": "5s",
    "__range": "1h",
}

# PromQL words that are not metric names: functions, aggregations, operators and modifiers.
PROMQL_FUNCTIONS = frozenset(
    """
abs absent absent_over_time avg_over_time ceil changes clamp clamp_max clamp_min count_over_time
day_of_month day_of_week day_of_year days_in_month delta deriv exp floor histogram_count
histogram_fraction histogram_quantile histogram_sum holt_winters hour idelta increase irate
label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute
month predict_linear present_over_time quantile_over_time rate resets round scalar sgn sort sort_desc
sqrt stddev_over_time stdvar_over_time sum_over_time time timestamp vector year acos acosh asin asinh
atan atanh cos cosh sin sinh tan tanh deg rad pi
sum min max avg group stddev stdvar count count_values bottomk topk quantile
""".split()
)
PROMQL_KEYWORDS = frozenset(
    "and or unless by without on ignoring group_left group_right offset bool start end inf nan".split()
)
# Keywords followed by a parenthesised list of label names, not of expressions.
LABEL_LIST_KEYWORDS = frozenset("by without on ignoring group_left group_right".split())
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<space>\s+)
  | (?P<punct>.)
    """,
    re.VERBOSE,
)
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<selector>.*),)?\s*(?P<label>\w+)\s*\)\s*$", re.DOTALL)


class PrometheusError(RuntimeError):
    """Prometheus refused a query or did not come up; the message names the expression or the log."""


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


@dataclass(frozen=True)
class Selector:
    """One `metric{label="value", ...}` in an expression (matchers as (label, op, value))."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...] = ()


def tokens(expr: str) -> list[Token]:
    """PromQL tokens without whitespace; strings keep their quotes."""
    found = []
    for match in _TOKEN.finditer(expr):
        kind = match.lastgroup or "punct"
        if kind != "space":
            found.append(Token(kind, match.group()))
    return found


def selectors(expr: str) -> list[Selector]:
    """Every metric selector in a PromQL expression, in order.

    A metric name is an identifier outside `{...}` that is not a function, aggregation, keyword or
    a label in a `by (...)`/`on (...)`-style list. Works on what Grafana and Prometheus accept; it
    is not a full parser (it does not need one: it never has to evaluate anything).
    """
    toks = tokens(expr)
    found: list[Selector] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.kind == "ident" and tok.text.lower() in LABEL_LIST_KEYWORDS:
            i = _skip_parenthesised(toks, i + 1)
            continue
        if tok.kind == "punct" and tok.text == "{":
            # A bare `{__name__="x"}` selector.
            matchers, i = _matchers(toks, i)
            names = [value for label, op, value in matchers if label == "__name__" and op == "="]
            if names:
                found.append(Selector(names[0], tuple(m for m in matchers if m[0] != "__name__")))
            continue
        if tok.kind == "ident" and _is_metric_name(toks, i):
            matchers: tuple[tuple[str, str, str], ...] = ()
            j = i + 1
            if j < len(toks) and toks[j].text == "{":
                matchers, j = _matchers(toks, j)
            found.append(Selector(tok.text, matchers))
            i = j
            continue
        i += 1
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (as written: `x_bucket` stays `x_bucket`)."""
    return {selector.metric for selector in selectors(expr)}


def histogram_base(name: str) -> str | None:
    """`x` for `x_bucket`/`x_sum`/`x_count`, else None."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _is_metric_name(toks: Sequence[Token], i: int) -> bool:
    word = toks[i].text
    if word.lower() in PROMQL_KEYWORDS:
        return False
    following = toks[i + 1].text if i + 1 < len(toks) else ""
    # `sum by (le) (...)`: an aggregation may put its grouping before its parentheses.
    if word in PROMQL_FUNCTIONS and (following == "(" or following.lower() in ("by", "without")):
        return False
    if following == "(":
        raise ValueError(f"{word!r} is called like a function but PromQL has no such function")
    return True


def _skip_parenthesised(toks: Sequence[Token], i: int) -> int:
    if i >= len(toks) or toks[i].text != "(":
        return i
    depth = 0
    while i < len(toks):
        depth += {"(": 1, ")": -1}.get(toks[i].text, 0)
        i += 1
        if depth == 0:
            break
    return i


def _matchers(toks: Sequence[Token], i: int) -> tuple[tuple[tuple[str, str, str], ...], int]:
    """Parse `{a="x", b!~"y"}` starting at the `{`; return the matchers and the index after `}`."""
    found = []
    i += 1
    while i < len(toks) and toks[i].text != "}":
        if toks[i].kind in ("ident", "string") and i + 2 < len(toks):
            label = toks[i].text.strip("\"'`")
            op, j = toks[i + 1].text, i + 2
            if toks[j].text in ("=", "~"):  # `!=`, `=~`, `!~` arrive as two punctuation tokens
                op, j = op + toks[j].text, j + 1
            if j < len(toks) and toks[j].kind == "string":
                found.append((label, op, _unquote(toks[j].text)))
                i = j + 1
                continue
        i += 1
    return tuple(found), i + 1


def _unquote(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]  # raw string: no escapes
    # PromQL's escapes are Go's, which Python's string literals share for everything a label uses.
    return ast.literal_eval(literal)


def substitute_variables(expr: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana's `$name`, `${name}`, `${name:format}` and `[[name]]` with given values.

    An unknown variable is an error, not left in place: Prometheus would reject the `$` anyway,
    and the message should name the variable instead.
    """

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in variables:
            raise KeyError(f"dashboard variable ${name} has no value; pass variables={{{name!r}: ...}}")
        return variables[name]

    return _VARIABLE.sub(replace, expr)


def dashboard_panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(dashboard: Mapping[str, Any], variables: Mapping[str, str] | None = None) -> list[str]:
    """Every panel target's PromQL, with dashboard variables replaced (defaults: DEFAULT_VARIABLES)."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    return [
        substitute_variables(target["expr"], values)
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def dashboard_variable_selectors(
    dashboard: Mapping[str, Any], variables: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """(selector, label) of every `label_values(selector, label)` template variable query."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, Mapping) else query or variable.get("definition", "")
        match = _LABEL_VALUES.match(query)
        if match is None:
            raise ValueError(f"template variable {variable.get('name')!r}: cannot read query {query!r}")
        found.append((substitute_variables(match["selector"] or "", values).strip(), match["label"]))
    return found


def rule_groups(rule: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The groups of a PrometheusRule object, of its `spec`, or of a plain rules file."""
    spec = rule.get("spec", rule)
    return list(spec.get("groups", []))


def rule_expressions(rule: Mapping[str, Any]) -> list[str]:
    """Every alerting and recording rule's `expr`, in file order."""
    return [item["expr"].strip() for group in rule_groups(rule) for item in group.get("rules", [])]


# --- the server ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapeTarget:
    """One `host:port` to scrape, with the labels a Kubernetes service discovery would have added.

    `honor_labels=True` mirrors the ServiceMonitor (the operator's own `namespace`/`name` labels
    win); the default mirrors the PodMonitor (the target's labels are added to the trainer's series).
    """

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    job: str = "finetune"
    honor_labels: bool = False
    metrics_path: str = "/metrics"


def operator_target(address: str, namespace: str = "finetune-system", pod: str = "finetune-operator-0") -> ScrapeTarget:
    """The operator's /metrics as manifests/monitoring/servicemonitor.yaml scrapes it."""
    return ScrapeTarget(address, {"namespace": namespace, "pod": pod}, job="finetune-operator", honor_labels=True)


def trainer_target(address: str, namespace: str, name: str, pod: str, rank: str = "0") -> ScrapeTarget:
    """A trainer pod's /metrics as manifests/monitoring/podmonitor.yaml relabels it."""
    labels = {"namespace": namespace, "name": name, "pod": pod, "rank": rank}
    return ScrapeTarget(address, labels, job="finetune-trainer")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prometheus_config(
    targets: Iterable[ScrapeTarget], scrape_interval: str = "1s", rule_files: Sequence[str] = ()
) -> dict[str, Any]:
    """A prometheus.yml: one scrape job per (job, honor_labels, path), static targets with labels."""
    jobs: dict[tuple[str, bool, str], list[ScrapeTarget]] = {}
    for target in targets:
        jobs.setdefault((target.job, target.honor_labels, target.metrics_path), []).append(target)
    names = {}
    scrape_configs = []
    for (job, honor, path), members in jobs.items():
        # Two jobs may share a name (same `job` label) only if Prometheus sees different job_names.
        names[job] = names.get(job, -1) + 1
        scrape_configs.append(
            {
                "job_name": job if names[job] == 0 else f"{job}-{names[job]}",
                "honor_labels": honor,
                "metrics_path": path,
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": [t.address], "labels": {"job": job, **t.labels}} for t in members],
            }
        )
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": list(rule_files),
        "scrape_configs": scrape_configs,
    }


class PrometheusServer:
    """`prometheus` on 127.0.0.1:<free port>, all state under `workdir`; a context manager.

    `rule_groups`: rule groups (e.g. `rule_groups(prometheusrule)`) evaluated every scrape interval,
    so `alerts()` shows which alerts are pending or firing.
    """

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[ScrapeTarget],
        *,
        scrape_interval: str = "1s",
        rule_groups: Sequence[Mapping[str, Any]] = (),
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.rule_groups = list(rule_groups)
        self.extra_args = list(extra_args)
        self.binary = binary or shutil.which("prometheus")
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        if self.binary is None:
            raise PrometheusError("prometheus is not installed: apt-get install -y prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        rule_files = []
        if self.rule_groups:
            rules = self.workdir / "rules.yml"
            rules.write_text(yaml.safe_dump({"groups": self.rule_groups}, sort_keys=False))
            rule_files.append(str(rules))
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(self.targets, self.scrape_interval, rule_files)))
        for folder in ("data", "consoles", "console_libraries"):
            (self.workdir / folder).mkdir(exist_ok=True)
        self.port = free_port()
        # Every path explicit: Debian's defaults point at /etc/prometheus and /var/lib/prometheus.
        command = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--web.console.templates={self.workdir / 'consoles'}",
            f"--web.console.libraries={self.workdir / 'console_libraries'}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
            *self.extra_args,
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready(timeout)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"prometheus not ready after {timeout} s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def api(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET /api/v1/<path>; returns `data`, raises PrometheusError with Prometheus' own message."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
            raise PrometheusError(
                f"{path} {dict(params or {})}: {body.get('errorType')}: {body.get('error')}"
            ) from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params or {})}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query: a list of `{"metric": {...}, "value": [t, "v"]}` (a scalar comes as one)."""
        params = {"query": expr, **({"time": at} if at is not None else {})}
        return _as_series(self.api("query", params))

    def query_range(self, expr: str, start: float, end: float, step: float | str) -> list[dict[str, Any]]:
        """Range query: a list of `{"metric": {...}, "values": [[t, "v"], ...]}`."""
        return _as_series(self.api("query_range", {"query": expr, "start": start, "end": end, "step": step}))

    def scrape_targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts: `{"labels", "annotations", "state", "value", ...}`."""
        return self.api("alerts")["alerts"]

    def wait_for_targets_up(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until every target has been scraped successfully; return them."""
        deadline = time.monotonic() + timeout
        while True:
            active = self.scrape_targets()
            if active and len(active) == len(self.targets) and all(t["health"] == "up" for t in active):
                return active
            if time.monotonic() > deadline:
                states = {t["scrapeUrl"]: (t["health"], t.get("lastError")) for t in active}
                raise PrometheusError(f"targets not all up after {timeout} s: {states}")
            time.sleep(0.2)

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns at least one series; return them."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise PrometheusError(f"{expr!r} returned nothing for {timeout} s")
            time.sleep(0.2)


def _as_series(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return list(data["result"])
