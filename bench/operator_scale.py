"""Operator scale in the sandbox: memory, CPU and API traffic with N live jobs reporting progress.

For each size N: N FineTuneJobs are created at once; the benchmark plays the Job controller and
kubelet (pods Pending, then Running; the sandbox runs no trainer), then sends every job a progress
report each --report-interval seconds (production's default: 10) for --duration seconds, signed
with the token from the job's `NAME-progress` Secret, as a trainer does. Then the trainers "exit 0",
the Jobs complete, and the FineTuneJobs are deleted. Measured:
- the operator process's RSS and CPU (psutil), idle before the jobs and while they report;
- status writes per minute under load, from the operator's finetune_operator_status_writes_total;
- API requests per job over its whole life, counted at the API server by verb and resource (every
  HTTP request comes from the operator: the benchmark writes in-process). Target: at most
  TARGET_WRITES_PER_JOB writes per job besides the throttled progress status writes.
The operator runs with production's intervals (reconcile 30 s, status writes 15 s per job).
Prints one line per size, the ratio writes-per-job / target last; exits non-zero above 1.
Run: python bench/operator_scale.py [--sizes 1000] [--duration 60]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from operator_sandbox import (
    NAMESPACE,
    WRITE_VERBS,
    BenchSandbox,
    finetunejob,
    job_names,
    metric_value,
    run_sizes,
    status_phase,
)

TARGET_WRITES_PER_JOB = 10
MiB = 1024 * 1024


async def send_reports(bench: BenchSandbox, keys: list, duration: float, interval: float) -> dict[int, int]:
    """Each job reports every `interval` s, jobs spread evenly over the interval; answers counted by HTTP status."""
    tokens = {k: bench.progress_token(k) for k in keys}
    answers: dict[int, int] = {}
    gate = asyncio.Semaphore(64)
    started = time.perf_counter()
    due = {k: started + interval * i / len(keys) for i, k in enumerate(keys)}
    steps = dict.fromkeys(keys, 0)
    pending: set[asyncio.Task] = set()

    async def one(key: tuple[str, str], step: int) -> None:
        async with gate:
            code = await bench.report(key, tokens[key], step, 100_000)
        answers[code] = answers.get(code, 0) + 1

    while time.perf_counter() - started < duration:
        now = time.perf_counter()
        for key, when in due.items():
            if when <= now:
                steps[key] += 10
                due[key] = when + interval
                task = asyncio.create_task(one(key, steps[key]))
                pending.add(task)
                task.add_done_callback(pending.discard)
        await asyncio.sleep(0.05)
    await asyncio.gather(*pending)
    return answers


async def sample_process(bench: BenchSandbox, stop: asyncio.Event, samples: list[tuple[float, float]]) -> None:
    """(RSS bytes, CPU percent of one core) once a second until `stop`."""
    process = bench.operator
    assert process is not None
    process.cpu_percent(None)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
        samples.append((process.memory_info().rss, process.cpu_percent(None)))


async def measure(size: int, duration: float, interval: float, data_dir: Path, timeout: float) -> dict:
    async with BenchSandbox(data_dir) as bench:
        bench.start_operator("ours")
        await bench.warm_up()
        await bench.quiet(1.0, timeout)
        idle_rss = bench.operator.memory_info().rss
        writes_at_start = await bench.scrape()
        bench.requests.clear()
        keys = [(NAMESPACE, name) for name in job_names(size)]

        # Life: created, children, pods Pending -> Running.
        setup_started = time.perf_counter()
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
        setup_seconds = time.perf_counter() - setup_started
        await bench.quiet(1.0, timeout)

        # Under load: every job reports; the operator is sampled.
        before_load = await bench.scrape()
        stop, samples = asyncio.Event(), []
        sampler = asyncio.create_task(sample_process(bench, stop, samples))
        load_started = time.perf_counter()
        answers = await send_reports(bench, keys, duration, interval)
        load_seconds = time.perf_counter() - load_started
        after_load = await bench.scrape()
        stop.set()
        await sampler

        # End of life: trainers exit 0, Jobs complete, the FineTuneJobs are deleted and garbage-collected.
        succeeded = bench.first_time("finetune.dev", "finetunejobs", lambda o: status_phase(o) == "Succeeded")
        bench.finish_pods(keys)
        await bench.wait_until(lambda: all(k in succeeded for k in keys), timeout, f"{size} jobs to succeed")
        for key in keys:
            bench.delete("finetune.dev/v1alpha1", "finetunejobs", key)
        await bench.wait_until(
            lambda: all(bench.get("batch", "jobs", k) is None for k in keys),
            timeout,
            "the deleted jobs' children to be garbage-collected",
        )
        await bench.quiet(2.0, timeout)
        at_end = await bench.scrape()
        requests = dict(bench.requests)

    def writes(text: str, kind: str) -> float:
        return metric_value(text, "finetune_operator_status_writes_total", {"kind": kind})

    progress_writes = writes(at_end, "progress") - writes(writes_at_start, "progress")
    per_minute = {
        kind: (writes(after_load, kind) - writes(before_load, kind)) * 60 / load_seconds
        for kind in ("progress", "reconcile")
    }
    return {
        "size": size,
        "setup_seconds": setup_seconds,
        "load_seconds": load_seconds,
        "answers": answers,
        "idle_rss": idle_rss,
        "peak_rss": max(rss for rss, _ in samples),
        "mean_cpu": sum(cpu for _, cpu in samples) / len(samples),
        "peak_cpu": max(cpu for _, cpu in samples),
        "writes_per_minute": per_minute,
        "requests": requests,
        "progress_writes": progress_writes,
    }


def per_job_breakdown(requests: dict[tuple[str, str], int], size: int) -> tuple[float, float, str]:
    """(reads per job, writes per job, "verb resource=n/job, ..." for the writes), the warm-up job's timer ticks included."""
    writes = {key: n for key, n in requests.items() if key[0] in WRITE_VERBS}
    reads = sum(n for key, n in requests.items() if key[0] in ("get", "list"))
    detail = ", ".join(f"{verb} {resource} {n / size:.2f}" for (verb, resource), n in sorted(writes.items()))
    return reads / size, sum(writes.values()) / size, detail


def summary(result: dict) -> tuple[str, float]:
    size = result["size"]
    reads, writes, detail = per_job_breakdown(result["requests"], size)
    besides_progress = writes - result["progress_writes"] / size
    ratio = besides_progress / TARGET_WRITES_PER_JOB
    accepted = result["answers"].get(204, 0)
    sent = sum(result["answers"].values())
    line = (
        f"scale N={size}: all Running after {result['setup_seconds']:.1f} s; {sent} reports in {result['load_seconds']:.0f} s"
        f" ({accepted} accepted, {sent / result['load_seconds']:.1f}/s): operator RSS {result['idle_rss'] / MiB:.0f} MiB idle,"
        f" {result['peak_rss'] / MiB:.0f} MiB peak; CPU {result['mean_cpu']:.0f}% mean, {result['peak_cpu']:.0f}% peak (of one core);"
        f" status writes/min under load: {result['writes_per_minute']['progress']:.0f} progress +"
        f" {result['writes_per_minute']['reconcile']:.0f} reconcile; per job over its life: {reads:.1f} reads,"
        f" {writes:.2f} writes ({detail}), {besides_progress:.2f} besides progress;"
        f" ratio writes-per-job/target: {ratio:.2f} (target <= 1, i.e. <= {TARGET_WRITES_PER_JOB} writes)"
    )
    return line, ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000", help="comma-separated numbers of live jobs")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of progress reports")
    parser.add_argument("--report-interval", type=float, default=10.0, help="seconds between one job's reports")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for any one phase")
    args = parser.parse_args()

    def measure_one(size: int, folder: Path) -> tuple[str, bool]:
        result = asyncio.run(measure(size, args.duration, args.report_interval, folder, args.timeout))
        line, ratio = summary(result)
        # Every report must have been accepted, besides the write target.
        return line, ratio > 1 or result["answers"].get(204, 0) != sum(result["answers"].values())

    return run_sizes(args.sizes, "bench-scale-", measure_one)


if __name__ == "__main__":
    sys.exit(main())
