"""Where the operator's memory goes, on demand.

Run the operator with tracemalloc on (`PYTHONTRACEMALLOC=8`: frames kept per allocation) and send it
SIGUSR2: it writes the live allocations, grouped by line and by call stack, to
FINETUNE_MEMORY_PROFILE (default /tmp/finetune-operator-memory.txt). bench/operator_scale.py
--profile-memory does this at the peak of its load; docs/scaling.md holds what it found. Tracing costs
CPU and memory of its own, so it is off unless asked for.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path

PROFILE_ENV = "FINETUNE_MEMORY_PROFILE"
DEFAULT_PATH = "/tmp/finetune-operator-memory.txt"
TOP_LINES = 40
TOP_STACKS = 20


def report(snapshot: tracemalloc.Snapshot) -> str:
    """Live allocations: the total, the biggest lines, and the biggest call stacks (pure)."""
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    by_line = snapshot.statistics("lineno")
    total = sum(stat.size for stat in by_line)
    lines = [f"traced live memory: {total / 2**20:.1f} MiB in {sum(s.count for s in by_line)} blocks"]
    if tracemalloc.is_tracing():
        lines.append(f"traced peak since start: {tracemalloc.get_traced_memory()[1] / 2**20:.1f} MiB")
    lines.append("")
    lines.append(f"top {TOP_LINES} lines:")
    for stat in by_line[:TOP_LINES]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d} blocks  {frame.filename}:{frame.lineno}")
    lines += ["", f"top {TOP_STACKS} call stacks (innermost last):"]
    for stat in snapshot.statistics("traceback")[:TOP_STACKS]:
        lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d} blocks")
        lines += [f"    {frame.filename}:{frame.lineno}" for frame in stat.traceback]
    return "\n".join(lines) + "\n"


def install() -> bool:
    """SIGUSR2 writes the report, when tracemalloc is tracing; whether it was installed."""
    if not tracemalloc.is_tracing():
        return False
    path = Path(os.environ.get(PROFILE_ENV) or DEFAULT_PATH)

    def dump(_signum: int, _frame: object) -> None:
        text = report(tracemalloc.take_snapshot())
        # Each signal writes a new file when the last one was taken away (renamed): the benchmark asks twice.
        tmp = path.with_suffix(".partial")
        tmp.write_text(text)
        tmp.replace(path)  # whole or not at all: the benchmark waits for the file

    signal.signal(signal.SIGUSR2, dump)
    return True
