"""Reconcile latency in the sandbox: ours against a minimal Kopf operator, same run, same kind of sandbox.

For each size N, N FineTuneJobs are committed to the API server at once (one in-process burst) and
the API server's store stamps each commit. Two latencies per job:
(a) FineTuneJob created -> its batch/v1 Job created, for our operator and for bench/baseline_operator.py
    (Kopf, the same settings, one create per FineTuneJob: the floor any Kopf operator pays);
(b) ours only: the trainer pod reported Running -> the FineTuneJob's status.phase Running. The
    benchmark plays the Job controller and kubelet (the sandbox runs without them, so nothing trains).
Each side gets a fresh sandbox per size, the order alternating between sizes; one warm-up job first;
bursts smaller than 10 jobs are repeated until there are 10 samples. The sandbox's CRD has its CEL
rules removed unless --with-cel (see operator_sandbox.py: the sandbox interprets them slowly).
Prints one line per size with p50/p99 and the ratio of the (a) p50s last; exits non-zero when ours
is above TARGET_RATIO x the baseline's at any size.
Run: python bench/operator_reconcile.py [--sizes 1,100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from operator_sandbox import NAMESPACE, BenchSandbox, finetunejob, job_names, ms, percentile, status_phase

TARGET_RATIO = 1.5


async def measure(
    side: str, size: int, rounds: int, data_dir: Path, timeout: float, cel: bool
) -> dict[str, list[float]]:
    """Latencies in seconds, pooled over `rounds` bursts: "create" always, "running" for our operator only."""
    result: dict[str, list[float]] = {"create": [], "running": []}
    async with BenchSandbox(data_dir, cel=cel) as bench:
        bench.start_operator(side)
        await bench.warm_up()
        for round_ in range(rounds):
            keys = [(NAMESPACE, name) for name in job_names(size, prefix=f"bench{round_}")]
            created = bench.first_time("finetune.dev", "finetunejobs")
            jobs = bench.first_time("batch", "jobs")
            # Stamped from the start: a job is Starting as soon as its Job exists, before any pod does.
            starting = bench.first_time("finetune.dev", "finetunejobs", lambda o: status_phase(o) == "Starting")
            for _, name in keys:
                bench.create_finetunejob(finetunejob(name))
            await bench.wait_until(lambda: all(k in jobs for k in keys), timeout, f"{size} Jobs from {side}")
            result["create"] += [jobs[k] - created[k] for k in keys]
            if side == "ours":
                # Pods appear (Pending), the operator settles every job on Starting, then all pods run at once.
                bench.create_pods(keys)
                await bench.wait_until(lambda: all(k in starting for k in keys), timeout, f"{size} jobs to be Starting")
                await bench.quiet(1.0, timeout)
                pods_running = bench.first_time("", "pods", lambda o: status_phase(o) == "Running")
                running = bench.first_time("finetune.dev", "finetunejobs", lambda o: status_phase(o) == "Running")
                bench.run_pods(keys)
                await bench.wait_until(lambda: all(k in running for k in keys), timeout, f"{size} jobs to be Running")
                result["running"] += [running[k] - pods_running[(k[0], f"{k[1]}-0")] for k in keys]
            await bench.quiet(1.0, timeout)
            bench.stop_stamping()
    return result


def rounds_for(size: int) -> int:
    """Small bursts are repeated so their percentiles rest on at least 10 samples."""
    return max(1, -(-10 // size))


def summary(size: int, ours: dict[str, list[float]], base: dict[str, list[float]]) -> tuple[str, float]:
    ratio = percentile(ours["create"], 50) / percentile(base["create"], 50)
    line = (
        f"reconcile N={size}: created->Job p50 {ms(percentile(ours['create'], 50))} p99 {ms(percentile(ours['create'], 99))}"
        f" (baseline p50 {ms(percentile(base['create'], 50))} p99 {ms(percentile(base['create'], 99))});"
        f" pod Running->status Running p50 {ms(percentile(ours['running'], 50))} p99 {ms(percentile(ours['running'], 99))};"
        f" ratio ours/baseline p50: {ratio:.2f} (target <= {TARGET_RATIO})"
    )
    return line, ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,100,1000", help="comma-separated numbers of jobs created at once")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for any one phase")
    parser.add_argument("--rounds", type=int, default=0, help="bursts per size (default: enough for 10 samples)")
    parser.add_argument(
        "--with-cel",
        action="store_true",
        help="keep the CRD's CEL rules (the sandbox interprets them: ~45 ms per FineTuneJob write)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    missed = False
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        for i, size in enumerate(sizes):
            sides = ["baseline", "ours"] if i % 2 == 0 else ["ours", "baseline"]  # neither side always goes first
            results = {
                side: asyncio.run(
                    measure(
                        side,
                        size,
                        args.rounds or rounds_for(size),
                        Path(tmp) / f"{side}-{size}",
                        args.timeout,
                        args.with_cel,
                    )
                )
                for side in sides
            }
            line, ratio = summary(size, results["ours"], results["baseline"])
            print(line, flush=True)
            missed |= ratio > TARGET_RATIO
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
