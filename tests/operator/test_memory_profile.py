"""The operator's on-demand memory report (finetune_operator.memory_profile)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

from finetune_operator import memory_profile


def test_report_names_the_line_that_holds_the_memory() -> None:
    tracemalloc.start(4)
    try:
        held = [bytearray(1024) for _ in range(2000)]  # about 2 MiB from this one line
        text = memory_profile.report(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    assert held
    first_line = next(
        line for line in text.splitlines() if line.strip().endswith(tuple("0123456789")) and "MiB" in line
    )
    assert __file__ in first_line, text
    assert text.startswith("traced live memory: ")
    assert "top 20 call stacks" in text


def test_not_installed_without_tracing() -> None:
    assert not tracemalloc.is_tracing()
    assert memory_profile.install() is False


def test_sigusr2_writes_the_report_of_a_traced_process(tmp_path: Path) -> None:
    out = tmp_path / "memory.txt"
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from finetune_operator import memory_profile
        assert memory_profile.install()
        print("ready", flush=True)
        held = [bytearray(4096) for _ in range(1000)]
        while not os.path.exists(sys.argv[1]):
            time.sleep(0.05)
        """
    )
    env = {**os.environ, "PYTHONTRACEMALLOC": "4", memory_profile.PROFILE_ENV: str(out)}
    with subprocess.Popen([sys.executable, "-c", script, str(out)], env=env, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
        process.send_signal(signal.SIGUSR2)
        assert process.wait(60) == 0
    assert out.read_text().startswith("traced live memory: ")
