"""Time to running in the sandbox: ours against a minimal Kopf operator, same run, same kind of sandbox.

What users wait for: FineTuneJob created -> its trainer container started by the kubelet. For each size
N, N FineTuneJobs are committed to the API server at once (one in-process burst). The benchmark plays
the Job controller and the kubelet for every Job the operator creates (operator_sandbox.KubeletPlay):
the pod appears as its Job does, and the kubelet starts its container once every ConfigMap and Secret
the pod mounts exists; a volume whose source is missing at an attempt is retried with the kubelet's
per-volume back-off (0.5 s, doubling, capped at 2 min 2 s: finetune_sandbox.kubelet.mount_backoff,
the schedule the sandbox's own kubelet uses). Both sides get the same play.

Per job, from stamps the API server's store takes as each change is committed (one perf_counter clock):
  created  the FineTuneJob's creation,
  started  the pod status write that puts the container in state.running (the kubelet's start).
Also printed: created -> Job created, how many mounts failed, and for ours, pod Running -> the
FineTuneJob's status.phase Running (the operator notices a started trainer).

The baseline is bench/baseline_operator.py: Kopf with our Kopf settings, a ConfigMap then a Job whose pod
mounts it. --baseline-job-first also measures it creating the Job first (the wrong order), against the
same baseline: what the kubelet's back-off costs. Each side gets a fresh sandbox per size, the order
rotating between sizes; one warm-up job first. By default bursts are repeated to at least 10 samples and
at least 5 bursts up to N=100; the spread is the lowest and highest per-burst p50. The sandbox's CRD has
its CEL rules removed unless --with-cel (see operator_sandbox.py: the sandbox interprets them slowly).
Prints one line per size with p50/p99 and the ratio of the created -> started p50s last; exits non-zero
when ours is above TARGET_RATIO x the baseline's at any size.
Run: python bench/operator_reconcile.py [--sizes 1,100,1000] [--rounds R] [--baseline-job-first]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from operator_sandbox import (
    NAMESPACE,
    WRITE_VERBS,
    BenchSandbox,
    KubeletPlay,
    container_running,
    finetunejob,
    job_names,
    ms,
    percentile,
    status_phase,
)

TARGET_RATIO = 1.3
MIN_SAMPLES = 10  # small bursts are repeated until there are this many samples
MIN_ROUNDS_UP_TO_100 = 5  # a single burst of 100 is noisy
SIDES = {
    "ours": ("ours", {}),
    "baseline": ("baseline", {}),
    "baseline-job-first": ("baseline", {"BASELINE_JOB_FIRST": "1"}),
}


@dataclass
class Samples:
    """One side's measurements at one size, in seconds."""

    started: list[list[float]] = field(default_factory=list)  # per round: created -> container started
    job: list[float] = field(default_factory=list)  # created -> Job created
    running: list[float] = field(default_factory=list)  # ours only: pod Running -> status.phase Running
    failed_mounts: int = 0
    delayed_pods: int = 0  # pods that met a missing ConfigMap or Secret at least once
    requests: float = 0.0  # the operator's API requests per job during the rounds (watches excluded)
    writes: float = 0.0  # of which writes

    @property
    def all_started(self) -> list[float]:
        return [s for round_ in self.started for s in round_]

    def p50(self) -> float:
        return percentile(self.all_started, 50)

    def spread(self) -> tuple[float, float]:
        """Lowest and highest per-round p50."""
        p50s = [percentile(round_, 50) for round_ in self.started]
        return min(p50s), max(p50s)


async def measure(
    side: str, size: int, rounds: int, data_dir: Path, timeout: float, cel: bool, pod_delay: float
) -> Samples:
    which, env = SIDES[side]
    result = Samples()
    async with BenchSandbox(data_dir, cel=cel) as bench:
        play = KubeletPlay(bench, pod_delay)
        try:
            bench.start_operator(which, env)
            # Warm-up (excluded): the operator is watching and the whole path has run once.
            started = bench.first_time("", "pods", container_running)
            bench.create_finetunejob(finetunejob("warmup"))
            await bench.wait_until(
                lambda: (NAMESPACE, "warmup-0") in started, 60.0, f"the warm-up job's trainer ({side})"
            )
            await bench.quiet(1.0, timeout)
            bench.stop_stamping()
            play.failed_mounts, play.delayed_pods = 0, set()
            before = collections.Counter(bench.requests)
            for round_ in range(rounds):
                keys = [(NAMESPACE, name) for name in job_names(size, prefix=f"bench{round_}")]
                pods = [(ns, f"{name}-0") for ns, name in keys]
                created = bench.first_time("finetune.dev", "finetunejobs")
                jobs = bench.first_time("batch", "jobs")
                started = bench.first_time("", "pods", container_running)
                running = bench.first_time("finetune.dev", "finetunejobs", lambda o: status_phase(o) == "Running")
                for _, name in keys:
                    bench.create_finetunejob(finetunejob(name))
                await bench.wait_until(lambda: all(p in started for p in pods), timeout, f"{size} trainers ({side})")
                if which == "ours":
                    await bench.wait_until(lambda: all(k in running for k in keys), timeout, f"{size} jobs Running")
                    result.running += [running[k] - started[p] for k, p in zip(keys, pods, strict=True)]
                result.started.append([started[p] - created[k] for k, p in zip(keys, pods, strict=True)])
                result.job += [jobs[k] - created[k] for k in keys]
                await bench.quiet(1.0, timeout)
                bench.stop_stamping()
            result.failed_mounts, result.delayed_pods = play.failed_mounts, len(play.delayed_pods)
            counted = bench.requests - before
            jobs_measured = size * rounds
            result.requests = sum(n for (verb, _), n in counted.items() if verb != "watch") / jobs_measured
            result.writes = sum(n for (verb, _), n in counted.items() if verb in WRITE_VERBS) / jobs_measured
        finally:
            play.close()
    return result


def rounds_for(size: int) -> int:
    """Bursts per size: at least MIN_SAMPLES samples, and at least MIN_ROUNDS_UP_TO_100 bursts up to N=100."""
    return max(-(-MIN_SAMPLES // size), MIN_ROUNDS_UP_TO_100 if size <= 100 else 1)


def rounds_text(samples: Samples) -> str:
    return "1 round" if len(samples.started) == 1 else f"{len(samples.started)} rounds"


def spread(samples: Samples) -> str:
    low, high = samples.spread()
    return f"{ms(low)}..{ms(high)}" if len(samples.started) > 1 else "1 round"


def summary(size: int, ours: Samples, base: Samples) -> tuple[str, float]:
    ratio = ours.p50() / base.p50()
    started_ours, started_base = ours.all_started, base.all_started
    line = (
        f"time to running N={size} ({rounds_text(ours)}):"
        f" created->started p50 {ms(percentile(started_ours, 50))} p99 {ms(percentile(started_ours, 99))}"
        f" (baseline p50 {ms(percentile(started_base, 50))} p99 {ms(percentile(started_base, 99))});"
        f" per-round p50 {spread(ours)} (baseline {spread(base)});"
        f" created->Job p50 {ms(percentile(ours.job, 50))} (baseline {ms(percentile(base.job, 50))});"
        f" failed mounts {ours.failed_mounts} (baseline {base.failed_mounts});"
        f" API requests per job {ours.requests:.1f}, {ours.writes:.1f} writes"
        f" (baseline {base.requests:.1f}, {base.writes:.1f});"
        f" pod Running->status Running p50 {ms(percentile(ours.running, 50))} p99 {ms(percentile(ours.running, 99))};"
        f" ratio ours/baseline p50: {ratio:.2f} (target <= {TARGET_RATIO})"
    )
    return line, ratio


def job_first_summary(size: int, job_first: Samples, base: Samples) -> str:
    started = job_first.all_started
    return (
        f"baseline job-first N={size} ({rounds_text(job_first)}):"
        f" created->started p50 {ms(percentile(started, 50))} p99 {ms(percentile(started, 99))};"
        f" per-round p50 {spread(job_first)}; created->Job p50 {ms(percentile(job_first.job, 50))};"
        f" pods that met a missing ConfigMap {job_first.delayed_pods} of {len(started)},"
        f" failed mounts {job_first.failed_mounts};"
        f" ratio job-first/baseline p50: {job_first.p50() / base.p50():.2f} (the wrong order's cost, not a target)"
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,100,1000", help="comma-separated numbers of jobs created at once")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for any one phase")
    parser.add_argument(
        "--rounds", type=int, default=0, help="bursts per size (default: >= 10 samples, >= 5 bursts up to N=100)"
    )
    parser.add_argument(
        "--baseline-job-first",
        action="store_true",
        help="also measure the baseline creating the Job before its ConfigMap (the kubelet's back-off, in numbers)",
    )
    parser.add_argument(
        "--pod-delay",
        type=float,
        default=0.0,
        help="seconds from a Job's creation to its pod's (Job controller and scheduler; default 0: at once)",
    )
    parser.add_argument(
        "--with-cel",
        action="store_true",
        help="keep the CRD's CEL rules (the sandbox interprets them: ~45 ms per FineTuneJob write)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    order = ["baseline", "ours"] + (["baseline-job-first"] if args.baseline_job_first else [])
    print(f"load average at start: {load_average()}", flush=True)
    missed = False
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        for i, size in enumerate(sizes):
            sides = order[i % len(order) :] + order[: i % len(order)]  # no side always goes first
            results = {
                side: asyncio.run(
                    measure(
                        side,
                        size,
                        args.rounds or rounds_for(size),
                        Path(tmp) / f"{side}-{size}",
                        args.timeout,
                        args.with_cel,
                        args.pod_delay,
                    )
                )
                for side in sides
            }
            line, ratio = summary(size, results["ours"], results["baseline"])
            print(line, flush=True)
            if "baseline-job-first" in results:
                print(job_first_summary(size, results["baseline-job-first"], results["baseline"]), flush=True)
            missed |= ratio > TARGET_RATIO
    print(f"load average at end: {load_average()}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
