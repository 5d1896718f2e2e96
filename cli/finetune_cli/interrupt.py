"""Ctrl-C for the CLI's polling loops (`ftjob watch`): it stops them wherever the signal lands.

CPython runs a Python-level SIGINT handler in whatever Python code the main thread executes next, and that
can be a finalizer (a `weakref.finalize` callback or a `__del__`) that the garbage collector or a dropped
reference started. An exception raised there cannot propagate: CPython prints "Exception ignored in ..." and
carries on, so the KeyboardInterrupt is lost. The kubernetes client's urllib3 pool closes its sockets in such
a finalizer when a refresh's client is dropped, so a Ctrl-C that landed there left `ftjob watch` refreshing
forever (issue 14). The handler here also sets a flag, which no finalizer can swallow; the loops check it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

# How often a sleep looks at the flag: the longest a Ctrl-C that a finalizer swallowed keeps a loop waiting.
POLL_S = 0.1


@contextlib.contextmanager
def ctrl_c() -> Iterator[Callable[[], bool]]:
    """Within the block, SIGINT raises KeyboardInterrupt at once and sets a flag; yields the flag's reader.

    This replaces an inherited SIG_IGN too (a background job of a non-interactive shell, `make test &`, starts
    with SIGINT ignored, and Python keeps it so): the loops are interactive, and a SIGINT sent to them means stop.
    Main thread only (as `signal.signal`). The previous handler and `sys.unraisablehook` come back on exit.
    """
    interrupted = False
    previous_handler = signal.getsignal(signal.SIGINT)
    previous_hook = sys.unraisablehook

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    def unraisable(info: Any) -> None:
        # A KeyboardInterrupt that a finalizer swallowed: the flag carries it on, so no traceback on the terminal.
        if interrupted and isinstance(info.exc_value, KeyboardInterrupt):
            return
        previous_hook(info)

    signal.signal(signal.SIGINT, on_sigint)
    sys.unraisablehook = unraisable
    try:
        yield lambda: interrupted
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous_hook


def sleep(seconds: float, interrupted: Callable[[], bool]) -> None:
    """`time.sleep(seconds)` that returns early once `interrupted()` is true."""
    deadline = time.monotonic() + seconds
    while not interrupted():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, POLL_S))
