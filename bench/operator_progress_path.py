"""Progress path latency in the sandbox: a report sent -> visible in the FineTuneJob's status and in /metrics.

For each size N, N jobs are brought to Running (the benchmark plays the Job controller and kubelet;
no trainer runs), then --probes reports are sent one at a time, round-robin over the jobs, each with
a new step, signed with the job's token from its `NAME-progress` Secret. Per probe:
- status: from sending the report to the API server committing status.progress.step (stamped in
  the server's store);
- metrics: from sending to the first /metrics scrape that shows finetune_operator_job_step at the
  new step (scraped back to back, so the resolution is one scrape, itself measured and printed).
- round trip: from sending to the endpoint's 204, on a new connection per report as the trainer does (urllib:
  a TCP and, over HTTPS, a TLS handshake each time); the operator's CPU time per report is measured too.
The operator runs with FINETUNE_STATUS_INTERVAL_SECONDS=--status-interval (default 0: every report is
written at once, so the latency is the path's own). Target: p99 of both within TARGET_SECONDS plus
the status interval (the documented promise: the newest report lands within one interval).
--transport https (the default), http (FINETUNE_PROGRESS_TLS=disabled), or both (each size twice, in that
order, with the cost of TLS as ratios https/http of the round trip and of the operator's CPU per report).
Reports over HTTPS are verified with the CA bundle of the job's progress Secret, as a trainer verifies them.
Prints one line per size, the ratio worst p99 / target last; exits non-zero above 1.
Run: python bench/operator_progress_path.py [--sizes 1,100] [--probes 200] [--transport both]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import ssl
import sys
import time
from pathlib import Path

import aiohttp
from operator_sandbox import NAMESPACE, BenchSandbox, finetunejob, job_names, ms, percentile, run_sizes, status_phase

TARGET_SECONDS = 1.0
# The progress endpoint answers 429 above 5 reports/s per job sustained: probes to one job stay below it.
MIN_SECONDS_BETWEEN_REPORTS = 0.25


def step_in_metrics(text: str, key: tuple[str, str]) -> float | None:
    """finetune_operator_job_step of one job in Prometheus text, None when absent."""
    labels = {"namespace": key[0], "name": key[1]}
    for line in text.splitlines():
        if not line.startswith("finetune_operator_job_step{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[line.index("{") : line.index("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


class Reporter:
    """Reports as a trainer sends them: a new connection each (force_close), HTTPS verified with the job's CA."""

    def __init__(self, bench: BenchSandbox, transport: str) -> None:
        self.bench, self.transport = bench, transport
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        self.contexts: dict[tuple[str, str], ssl.SSLContext] = {}
        self._by_bundle: dict[str, ssl.SSLContext] = {}

    def trust(self, key: tuple[str, str]) -> None:
        if self.transport == "https":
            secret = self.bench.get("", "secrets", (key[0], f"{key[1]}-progress")) or {}
            bundle = base64.b64decode((secret.get("data") or {})["ca.crt"]).decode()
            # Jobs share the operator's CA: one context per bundle (10,000 contexts would cost the benchmark GiBs).
            if bundle not in self._by_bundle:
                self._by_bundle[bundle] = ssl.create_default_context(cadata=bundle)
            self.contexts[key] = self._by_bundle[bundle]

    async def report(self, key: tuple[str, str], token: str, step: int, total: int) -> int:
        port = self.bench.sandbox.progress_port
        url = f"{self.transport}://127.0.0.1:{port}/progress/v1/namespaces/{key[0]}/finetunejobs/{key[1]}"
        body = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "event": "log",
            "step": step,
            "totalSteps": total,
            "loss": 1.0 / (step + 1),
            "samplesPerSecond": 10.0,
        }
        async with self.session.post(
            url,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            ssl=self.contexts[key] if self.transport == "https" else True,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as response:
            await response.read()
            return response.status

    async def close(self) -> None:
        await self.session.close()


async def measure(
    size: int, probes: int, status_interval: float, data_dir: Path, timeout: float, transport: str = "https"
) -> dict[str, list[float]]:
    env = {"FINETUNE_STATUS_INTERVAL_SECONDS": str(status_interval)}
    if transport == "http":
        env["FINETUNE_PROGRESS_TLS"] = "disabled"
    async with BenchSandbox(data_dir, env) as bench:
        bench.start_operator("ours")
        await bench.warm_up()
        keys = [(NAMESPACE, name) for name in job_names(size)]
        jobs = bench.first_time("batch", "jobs")
        starting = bench.first_time("finetune.dev", "finetunejobs", lambda o: status_phase(o) == "Starting")
        running = bench.first_time("finetune.dev", "finetunejobs", lambda o: status_phase(o) == "Running")
        for _, name in keys:
            bench.create_finetunejob(finetunejob(name))
        await bench.wait_until(lambda: all(k in jobs for k in keys), timeout, f"{size} Jobs")
        bench.create_pods(keys)
        await bench.wait_until(lambda: all(k in starting for k in keys), timeout, f"{size} jobs to be Starting")
        bench.run_pods(keys)
        await bench.wait_until(lambda: all(k in running for k in keys), timeout, f"{size} jobs to be Running")
        await bench.quiet(1.0, timeout)
        tokens = {k: bench.progress_token(k) for k in keys}
        reporter = Reporter(bench, transport)
        for k in keys:
            reporter.trust(k)

        result: dict[str, list[float]] = {"status": [], "metrics": [], "scrape": [], "roundtrip": [], "cpu": []}
        assert bench.operator is not None
        cpu_before = sum(bench.operator.cpu_times()[:2])
        last_sent: dict[tuple[str, str], float] = {}
        for probe in range(probes):
            key = keys[probe % size]
            step = probe + 1
            wait = MIN_SECONDS_BETWEEN_REPORTS - (time.perf_counter() - last_sent.get(key, float("-inf")))
            if wait > 0:
                await asyncio.sleep(wait)
            landed = bench.first_time(
                "finetune.dev",
                "finetunejobs",
                lambda o, k=key, s=step: (
                    o["metadata"]["name"] == k[1] and ((o.get("status") or {}).get("progress") or {}).get("step") == s
                ),
            )
            sent = last_sent[key] = time.perf_counter()
            code = await reporter.report(key, tokens[key], step, 100_000)
            result["roundtrip"].append(time.perf_counter() - sent)
            if code != 204:
                raise RuntimeError(
                    f"the operator answered {code} to a report for {key[1]}; see {data_dir}/operator.log"
                )
            deadline = sent + timeout
            while True:
                scrape_started = time.perf_counter()
                text = await bench.scrape()
                result["scrape"].append(time.perf_counter() - scrape_started)
                if step_in_metrics(text, key) == step:
                    result["metrics"].append(time.perf_counter() - sent)
                    break
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"step {step} of {key[1]} never reached /metrics")
            await bench.wait_until(lambda: key in landed, timeout, f"step {step} of {key[1]} in its status")
            result["status"].append(landed[key] - sent)
            bench.stop_stamping(landed)
        # The operator's CPU over the probes (reports, status writes, scrapes), per report.
        result["cpu"].append((sum(bench.operator.cpu_times()[:2]) - cpu_before) / probes)
        await reporter.close()
        return result


def summary(
    size: int, result: dict[str, list[float]], status_interval: float, transport: str = "https"
) -> tuple[str, float]:
    budget = TARGET_SECONDS + status_interval
    ratio = max(percentile(result["status"], 99), percentile(result["metrics"], 99)) / budget
    line = (
        f"progress path N={size} (status interval {status_interval:g} s, {len(result['status'])} reports):"
        f" over {transport}, round trip on a new connection p50 {ms(percentile(result['roundtrip'], 50))}"
        f" p99 {ms(percentile(result['roundtrip'], 99))}; operator CPU {ms(result['cpu'][0])} per report;"
        f" report->status p50 {ms(percentile(result['status'], 50))} p99 {ms(percentile(result['status'], 99))};"
        f" report->/metrics p50 {ms(percentile(result['metrics'], 50))} p99 {ms(percentile(result['metrics'], 99))}"
        f" (one scrape takes {ms(percentile(result['scrape'], 50))});"
        f" ratio worst p99/target: {ratio:.2f} (target <= 1, i.e. <= {budget:g} s)"
    )
    return line, ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,100", help="comma-separated numbers of live jobs")
    parser.add_argument("--probes", type=int, default=200, help="reports to time per size")
    parser.add_argument("--status-interval", type=float, default=0.0, help="FINETUNE_STATUS_INTERVAL_SECONDS")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for any one phase")
    parser.add_argument("--transport", choices=("https", "http", "both"), default="https", help="progress over")
    args = parser.parse_args()

    def measure_one(size: int, folder: Path) -> tuple[str, bool]:
        transports = ("https", "http") if args.transport == "both" else (args.transport,)
        lines, missed, results = [], False, {}
        for transport in transports:
            result = results[transport] = asyncio.run(
                measure(size, args.probes, args.status_interval, folder / transport, args.timeout, transport)
            )
            line, ratio = summary(size, result, args.status_interval, transport)
            lines.append(line)
            missed = missed or ratio > 1
        if len(results) == 2:
            tls, plain = results["https"], results["http"]
            lines.append(
                f"cost of TLS N={size}: round trip p50 x{percentile(tls['roundtrip'], 50) / percentile(plain['roundtrip'], 50):.2f}"
                f" (+{ms(percentile(tls['roundtrip'], 50) - percentile(plain['roundtrip'], 50))}),"
                f" operator CPU per report x{tls['cpu'][0] / plain['cpu'][0]:.2f}"
                f" (+{ms(tls['cpu'][0] - plain['cpu'][0])}),"
                f" report->status p50 x{percentile(tls['status'], 50) / percentile(plain['status'], 50):.2f}"
            )
        return "\n".join(lines), missed

    return run_sizes(args.sizes, "bench-progress-", measure_one)


if __name__ == "__main__":
    sys.exit(main())
