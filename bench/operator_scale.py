"""Operator scale on a shared cluster, in the sandbox: memory, CPU and API traffic with N live jobs
reporting progress, next to foreign pods that keep changing.

For each size N: --foreign-pods pods that are not ours exist before the operator starts (a shared cluster's
web servers and batch work) and, from the operator's start to the end of the load, --foreign-churn of them
change status per second. The N FineTuneJobs are created in bursts of --burst, each burst once the last
one's Jobs exist; the benchmark plays the Job controller and kubelet (each burst's pods Pending as soon
as its Jobs exist, then all Running; the sandbox runs no trainer), then sends every job a progress report each --report-interval seconds
(production's default: 10) for --duration seconds, signed with the token from the job's `NAME-progress`
Secret, as a trainer does. Then the trainers "exit 0", the Jobs complete, and the FineTuneJobs are
deleted. Measured:
- the operator process's RSS and CPU (psutil), idle before the jobs, and from the first burst to the end
  of the load (the peak);
- the pod and Job objects the API server sent the operator's watches (its deliveries count), and how
  many of those were foreign: 0 when its watches carry the server-side selector;
- status writes per minute under load, from the operator's finetune_operator_status_writes_total;
- API requests per job over its whole life, counted at the API server by verb and resource (every
  HTTP request comes from the operator: the benchmark writes in-process). Target: at most
  TARGET_WRITES_PER_JOB writes per job besides the throttled progress status writes.
The operator runs with production's intervals (reconcile 30 s, status writes 15 s per job).
Prints one line per size, the ratio writes-per-job / target last; exits non-zero above 1, or when any
foreign object reached the operator. With --compare-foreign each size runs twice, without and then with
the foreign pods, and a last line gives the RSS ratio (target: within 10%). --profile-memory runs the
operator under tracemalloc and saves where its memory is at the peak of the load (finetune_operator.
memory_profile) to the given file; tracing slows the operator down, so its other numbers are not comparable.
Run: python bench/operator_scale.py [--sizes 1000] [--duration 60] [--foreign-pods 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from operator_progress_path import Reporter
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
TARGET_FOREIGN_RSS_RATIO = 1.10
MiB = 1024 * 1024
OPERATOR_CLIENT = "kopf"  # the User-Agent of the operator's watches (Kopf's); its own API calls say finetune-operator
FOREIGN_LABELS = {"app": "web", "team": "storefront"}


def foreign_pod(i: int) -> dict[str, Any]:
    """A pod that is not ours: a shared cluster's web server, Running on some node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"web-{i:06d}", "namespace": f"team-{i % 50:02d}", "labels": dict(FOREIGN_LABELS)},
        "spec": {
            "nodeName": f"node-{i % 500:03d}",
            "containers": [
                {
                    "name": "web",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 8080}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                }
            ],
        },
        "status": {"phase": "Running", "podIP": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"},
    }


class ForeignPods:
    """--foreign-pods pods in 50 namespaces, and --foreign-churn status changes per second among them."""

    def __init__(self, bench: BenchSandbox, count: int, churn_per_second: float) -> None:
        self.bench, self.count, self.rate = bench, count, churn_per_second
        self.changes = 0
        self._task: asyncio.Task | None = None
        self.namespaces = {f"team-{i % 50:02d}" for i in range(min(count, 50))}

    async def create(self) -> None:
        namespaces = self.bench.server.registry.get("", "v1", "namespaces")
        for namespace in sorted(self.namespaces):
            self.bench.server.objects.create(namespaces, None, {"metadata": {"name": namespace}})
        for i in range(self.count):
            self.bench.create("v1", "pods", foreign_pod(i))
            if i % 1000 == 999:
                await asyncio.sleep(0)

    def start_churn(self) -> None:
        if self.count and self.rate > 0:
            self._task = asyncio.create_task(self._churn())

    async def stop_churn(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _churn(self) -> None:
        """Readiness flips on random pods, in ten batches a second: each one watch event for whoever watches them."""
        rng = random.Random(0)
        per_tick = max(1, round(self.rate / 10))
        while True:
            for _ in range(per_tick):
                i = rng.randrange(self.count)
                ready = "True" if self.changes % 2 else "False"
                status = {"conditions": [{"type": "Ready", "status": ready}]}
                self.bench.patch_status("v1", "pods", (f"team-{i % 50:02d}", f"web-{i:06d}"), status)
                self.changes += 1
            await asyncio.sleep(0.1)


async def send_reports(bench: BenchSandbox, keys: list, duration: float, interval: float) -> dict[int, int]:
    """Each job reports every `interval` s, jobs spread evenly over the interval, as trainers do: over HTTPS,
    a new connection each, verifying the operator with the job's CA bundle. Answers counted by HTTP status
    (0: no answer within 30 s)."""
    reporter = Reporter(bench, "https")
    tokens = {k: bench.progress_token(k) for k in keys}
    for key in keys:
        reporter.trust(key)
    answers: dict[int, int] = {}
    gate = asyncio.Semaphore(64)
    started = time.perf_counter()
    due = {k: started + interval * i / len(keys) for i, k in enumerate(keys)}
    steps = dict.fromkeys(keys, 0)
    pending: set[asyncio.Task] = set()

    async def one(key: tuple[str, str], step: int) -> None:
        async with gate:
            try:
                code = await reporter.report(key, tokens[key], step, 100_000)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                code = 0
        answers[code] = answers.get(code, 0) + 1

    try:
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
    finally:
        await reporter.close()
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


async def take_profile(bench: BenchSandbox, written: Path, keep: Path, timeout: float) -> None:
    """Ask the operator for its memory profile (SIGUSR2), wait for the file, keep it as `keep`."""
    written.unlink(missing_ok=True)
    os.kill(bench.operator.pid, signal.SIGUSR2)
    await bench.wait_until(written.exists, timeout, f"the operator's memory profile in {written}")
    written.replace(keep)


async def measure(args: argparse.Namespace, size: int, data_dir: Path, *, foreign_pods: int) -> dict:
    timeout = args.timeout
    operator_env = dict(item.split("=", 1) for item in args.operator_env)
    profile = Path(args.profile_memory).resolve() if args.profile_memory else None
    if profile is not None:
        operator_env |= {"PYTHONTRACEMALLOC": "8", "FINETUNE_MEMORY_PROFILE": str(profile)}
        profile.unlink(missing_ok=True)
    async with BenchSandbox(data_dir, operator_env=operator_env) as bench:
        foreign = ForeignPods(bench, foreign_pods, args.foreign_churn)
        await foreign.create()
        bench.start_operator("ours")
        foreign.start_churn()
        await bench.warm_up()
        await bench.quiet(1.0, timeout)
        idle_rss = bench.operator.memory_info().rss
        writes_at_start = await bench.scrape()
        bench.requests.clear()
        bench.server.deliveries.clear()
        keys = [(NAMESPACE, name) for name in job_names(size)]
        stop, samples = asyncio.Event(), []
        sampler = asyncio.create_task(sample_process(bench, stop, samples))

        # Life: created in bursts, children, pods Pending -> Running.
        setup_started = time.perf_counter()
        jobs = bench.first_time("batch", "jobs")
        starting = bench.first_time("finetune.dev", "finetunejobs", lambda o: status_phase(o) == "Starting")
        running = bench.first_time("finetune.dev", "finetunejobs", lambda o: status_phase(o) == "Running")
        for first in range(0, size, args.burst):
            burst = keys[first : first + args.burst]
            for _, name in burst:
                bench.create_finetunejob(finetunejob(name))
            if profile is not None and first == 0:
                # Mid-burst, where the peak is: half of the first burst's Jobs sent.
                await bench.wait_until(
                    lambda b=burst: sum(k in jobs for k in b) >= len(b) // 2, timeout, "half a burst"
                )
                await take_profile(bench, profile, profile.with_name(profile.stem + "-burst" + profile.suffix), timeout)
            await bench.wait_until(lambda b=burst: all(k in jobs for k in b), timeout, f"the Jobs of burst {first}")
            # The Job controller makes each Job's pod as the Job appears; before, all 10,000 Jobs waited
            # for their pods until the last burst was in, which no cluster does, and every reconcile of a
            # Job without pods asks the API server why (pod_creation.py).
            bench.create_pods(burst)
        await bench.wait_until(lambda: all(k in starting for k in keys), timeout, f"{size} jobs to be Starting")
        bench.run_pods(keys)
        await bench.wait_until(lambda: all(k in running for k in keys), timeout, f"{size} jobs to be Running")
        setup_seconds = time.perf_counter() - setup_started
        await bench.quiet(1.0, timeout)
        setup_samples = len(samples)

        # Under load: every job reports; the operator is sampled.
        before_load = await bench.scrape()
        cpu_before = bench.operator.cpu_times()
        load_started = time.perf_counter()
        answers = await send_reports(bench, keys, args.duration, args.report_interval)
        load_seconds = time.perf_counter() - load_started
        cpu_load = sum(bench.operator.cpu_times()[:2]) - sum(cpu_before[:2])
        after_load = await bench.scrape()
        stop.set()
        await sampler
        if profile is not None:
            await take_profile(bench, profile, profile, timeout)
        await foreign.stop_churn()

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
        deliveries = bench.server.deliveries
        delivered = {
            plural: deliveries.received(OPERATOR_CLIENT, group, plural)
            for group, plural in (("", "pods"), ("batch", "jobs"))
        }
        # Foreign pods live in their teams' namespaces, ours in NAMESPACE.
        foreign_delivered = deliveries.received(OPERATOR_CLIENT, "", "pods", foreign.namespaces)

    def writes(text: str, kind: str) -> float:
        return metric_value(text, "finetune_operator_status_writes_total", {"kind": kind})

    progress_writes = writes(at_end, "progress") - writes(writes_at_start, "progress")
    per_minute = {
        kind: (writes(after_load, kind) - writes(before_load, kind)) * 60 / load_seconds
        for kind in ("progress", "reconcile")
    }
    return {
        "size": size,
        "foreign_pods": foreign_pods,
        "foreign_changes": foreign.changes,
        "setup_seconds": setup_seconds,
        "load_seconds": load_seconds,
        "answers": answers,
        "idle_rss": idle_rss,
        "peak_rss": max(rss for rss, _ in samples),
        "setup_peak_rss": max((rss for rss, _ in samples[:setup_samples]), default=0),
        "mean_cpu": 100 * cpu_load / load_seconds,
        "peak_cpu": max(cpu for _, cpu in samples),
        "writes_per_minute": per_minute,
        "requests": requests,
        "progress_writes": progress_writes,
        "delivered": delivered,
        "foreign_delivered": foreign_delivered,
        # Watches the API server refused as too old: each made the operator list that resource again.
        "expired": {plural: n for (client, _, plural), n in deliveries.expired.items() if client == OPERATOR_CLIENT},
    }


def per_job_breakdown(requests: dict[tuple[str, str], int], size: int) -> tuple[float, float, str]:
    """(reads per job, writes per job, "verb resource=n/job, ..." for the writes), the warm-up job's timer ticks included."""
    writes = {key: n for key, n in requests.items() if key[0] in WRITE_VERBS}
    reads = sum(n for key, n in requests.items() if key[0] in ("get", "list"))
    detail = ", ".join(f"{verb} {resource} {n / size:.2f}" for (verb, resource), n in sorted(writes.items()))
    return reads / size, sum(writes.values()) / size, detail


def rss_target(size: int) -> float | None:
    """The issue's memory targets: 200 MiB up to 1,000 live jobs, 1 GiB up to 10,000; none beyond."""
    if size <= 1000:
        return 200 * MiB
    if size <= 10_000:
        return 1024 * MiB
    return None


def summary(result: dict) -> tuple[str, bool]:
    """The size's line, and whether it missed a target (writes, memory, foreign objects, refused reports)."""
    size = result["size"]
    reads, writes, detail = per_job_breakdown(result["requests"], size)
    besides_progress = writes - result["progress_writes"] / size
    ratio = besides_progress / TARGET_WRITES_PER_JOB
    accepted = result["answers"].get(204, 0)
    sent = sum(result["answers"].values())
    target = rss_target(size)
    rss_ratio = result["peak_rss"] / target if target else 0.0
    delivered = result["delivered"]
    expired = ", ".join(f"{plural} {n}" for plural, n in sorted(result["expired"].items())) or "none"
    line = (
        f"scale N={size}, {result['foreign_pods']} foreign pods ({result['foreign_changes']} changes):"
        f" all Running after {result['setup_seconds']:.1f} s; {sent} reports in {result['load_seconds']:.0f} s"
        f" ({accepted} accepted, {sent / result['load_seconds']:.1f}/s): operator RSS {result['idle_rss'] / MiB:.0f} MiB idle,"
        f" {result['peak_rss'] / MiB:.0f} MiB peak ({result['setup_peak_rss'] / MiB:.0f} before the load)"
        + (f" (ratio to the {target / MiB:.0f} MiB target: {rss_ratio:.2f})" if target else "")
        + f"; CPU {result['mean_cpu']:.0f}% mean under load, {result['peak_cpu']:.0f}% peak (of one core);"
        f" sent to the operator's watches: {delivered['pods']} pods, {delivered['jobs']} Jobs,"
        f" {result['foreign_delivered']} foreign;"
        f" watches expired (410, a relist each): {expired};"
        f" status writes/min under load: {result['writes_per_minute']['progress']:.0f} progress +"
        f" {result['writes_per_minute']['reconcile']:.0f} reconcile; per job over its life: {reads:.1f} reads,"
        f" {writes:.2f} writes ({detail}), {besides_progress:.2f} besides progress;"
        f" ratio writes-per-job/target: {ratio:.2f} (target <= 1, i.e. <= {TARGET_WRITES_PER_JOB} writes)"
    )
    missed = ratio > 1 or rss_ratio > 1 or result["foreign_delivered"] > 0 or accepted != sent
    return line, missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000", help="comma-separated numbers of live jobs")
    parser.add_argument("--burst", type=int, default=1000, help="FineTuneJobs created at once")
    parser.add_argument("--foreign-pods", type=int, default=0, help="pods that are not ours, in 50 other namespaces")
    parser.add_argument("--foreign-churn", type=float, default=100.0, help="foreign pod status changes per second")
    parser.add_argument(
        "--compare-foreign", action="store_true", help="run each size without and with the foreign pods; RSS ratio"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of progress reports")
    parser.add_argument("--report-interval", type=float, default=10.0, help="seconds between one job's reports")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for any one phase")
    parser.add_argument(
        "--operator-env", action="append", default=[], metavar="KEY=VALUE", help="extra operator environment"
    )
    parser.add_argument("--profile-memory", default="", help="file for the operator's memory profile at peak load")
    args = parser.parse_args()

    def measure_one(size: int, folder: Path) -> tuple[str, bool]:
        runs = [0, args.foreign_pods] if args.compare_foreign and args.foreign_pods else [args.foreign_pods]
        lines, missed, peaks = [], False, []
        for n, foreign in enumerate(runs):
            result = asyncio.run(measure(args, size, folder / str(n), foreign_pods=foreign))
            line, size_missed = summary(result)
            lines.append(line)
            missed |= size_missed
            peaks.append(result["peak_rss"])
        if len(runs) == 2:
            ratio = peaks[1] / peaks[0]
            lines.append(
                f"scale N={size}: ratio of peak RSS with {args.foreign_pods} foreign pods to without: {ratio:.2f}"
                f" (target {1 / TARGET_FOREIGN_RSS_RATIO:.2f}..{TARGET_FOREIGN_RSS_RATIO:.2f})"
            )
            missed |= not (1 / TARGET_FOREIGN_RSS_RATIO <= ratio <= TARGET_FOREIGN_RSS_RATIO)
        return "\n".join(lines), missed

    return run_sizes(args.sizes, "bench-scale-", measure_one)


if __name__ == "__main__":
    sys.exit(main())
