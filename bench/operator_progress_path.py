"""Progress path latency in the sandbox: a report sent -> visible in the FineTuneJob's status and in /metrics.

For each size N, N jobs are brought to Running (the benchmark plays the Job controller and kubelet;
no trainer runs), then --probes reports are sent one at a time, round-robin over the jobs, each with
a new step, signed with the job's token from its `NAME-progress` Secret. Per probe:
- status: from sending the report to the API server committing status.progress.step (stamped in
  the server's store);
- metrics: from sending to the first /metrics scrape that shows finetune_operator_job_step at the
  new step (scraped back to back, so the resolution is one scrape, itself measured and printed).
The operator runs with FINETUNE_STATUS_INTERVAL_SECONDS=--status-interval (default 0: every report is
written at once, so the latency is the path's own). Target: p99 of both within TARGET_SECONDS plus
the status interval (the documented promise: the newest report lands within one interval).
Prints one line per size, the ratio worst p99 / target last; exits non-zero above 1.
Run: python bench/operator_progress_path.py [--sizes 1,100] [--probes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

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


async def measure(
    size: int, probes: int, status_interval: float, data_dir: Path, timeout: float
) -> dict[str, list[float]]:
    env = {"FINETUNE_STATUS_INTERVAL_SECONDS": str(status_interval)}
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

        result: dict[str, list[float]] = {"status": [], "metrics": [], "scrape": []}
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
            code = await bench.report(key, tokens[key], step, 100_000)
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
        return result


def summary(size: int, result: dict[str, list[float]], status_interval: float) -> tuple[str, float]:
    budget = TARGET_SECONDS + status_interval
    ratio = max(percentile(result["status"], 99), percentile(result["metrics"], 99)) / budget
    line = (
        f"progress path N={size} (status interval {status_interval:g} s, {len(result['status'])} reports):"
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
    args = parser.parse_args()

    def measure_one(size: int, folder: Path) -> tuple[str, bool]:
        result = asyncio.run(measure(size, args.probes, args.status_interval, folder, args.timeout))
        line, ratio = summary(size, result, args.status_interval)
        return line, ratio > 1

    return run_sizes(args.sizes, "bench-progress-", measure_one)


if __name__ == "__main__":
    sys.exit(main())
