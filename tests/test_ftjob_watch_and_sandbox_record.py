"""`ftjob watch` stops on Ctrl-C wherever the signal lands, and where `ftjob sandbox up` records its sandbox
(issue 14). No cluster: the watch's refresh is faked; the records point at short-lived local processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import finetune_cli
import pytest
from finetune_cli import commands, interrupt, sandbox_record

# -- ftjob watch and Ctrl-C -----------------------------------------------------------------------------------


class _Pooled:
    """Stands in for the kubernetes client's urllib3 pool, whose sockets a weakref.finalize callback closes."""


def _sigint_inside_a_finalizer() -> None:
    # SIGINT while a finalizer runs: CPython reports the KeyboardInterrupt as "Exception ignored in ..." and goes on.
    pooled = _Pooled()
    weakref.finalize(pooled, signal.raise_signal, signal.SIGINT)
    del pooled


def test_sigint_inside_a_finalizer_is_swallowed_by_cpython() -> None:
    """The trap itself: without a flag, a program cannot tell that Ctrl-C was pressed."""
    ignored: list[BaseException] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda info: ignored.append(info.exc_value)
    # Python's own handler, as in an interactive shell: a suite run as a background job (`make test &`)
    # inherits SIGINT ignored, and an ignored signal raises nothing anywhere.
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _sigint_inside_a_finalizer()  # returns: no KeyboardInterrupt reaches the caller
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous
    assert [type(e) for e in ignored] == [KeyboardInterrupt]


def test_a_ctrl_c_that_a_finalizer_swallows_still_stops_the_watch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refreshes: list[int] = []

    def refresh(args: object) -> str:
        refreshes.append(len(refreshes) + 1)
        if len(refreshes) == 2:
            _sigint_inside_a_finalizer()
        if len(refreshes) > 5:
            raise AssertionError("`ftjob watch` kept refreshing after Ctrl-C")
        return f"screen {len(refreshes)}"

    monkeypatch.setattr(commands, "_get_table", refresh)

    assert finetune_cli.main(["watch", "--interval", "0"]) == 130

    assert refreshes == [1, 2]
    out, err = capsys.readouterr()
    assert "screen 1" in out and "screen 2" not in out  # the refresh that saw Ctrl-C is not printed
    assert "Exception ignored" not in err and "KeyboardInterrupt" not in err


class _Headers(Mapping[str, str]):
    """Response headers that Ctrl-C interrupts while pydantic reads them (urllib3's HTTPHeaderDict is Python too)."""

    def __getitem__(self, key: str) -> str:
        signal.raise_signal(signal.SIGINT)
        return "application/json"

    def __iter__(self) -> Iterator[str]:
        return iter(["content-type"])

    def __len__(self) -> int:
        return 1


def test_a_ctrl_c_that_comes_out_as_another_error_still_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.client.api_response import ApiResponse

    def refresh(args: object) -> str:
        # As the kubernetes client builds every response: pydantic turns the KeyboardInterrupt into a ValidationError.
        ApiResponse(status_code=200, headers=_Headers(), data=None, raw_data=b"{}")
        return "table"

    monkeypatch.setattr(commands, "_get_table", refresh)

    assert finetune_cli.main(["watch", "--interval", "0"]) == 130


def test_an_error_without_ctrl_c_still_ends_the_watch_with_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def refresh(args: object) -> str:
        raise RuntimeError("the server answered nonsense")

    monkeypatch.setattr(commands, "_get_table", refresh)

    with pytest.raises(RuntimeError, match="nonsense"):
        finetune_cli.main(["watch", "--interval", "0"])


def _interrupt_in(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_ctrl_c_between_refreshes_exits_130_at_once_and_restores_the_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "_get_table", lambda args: "table")
    handler, hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    timer = _interrupt_in(0.3)
    started = time.monotonic()
    try:
        assert finetune_cli.main(["watch", "--interval", "60"]) == 130
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10
    assert signal.getsignal(signal.SIGINT) is handler
    assert sys.unraisablehook is hook


def test_the_watch_stops_on_sigint_even_when_started_with_sigint_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # A background job of a non-interactive shell (`make test &`, a CI step) inherits SIGINT ignored; Python keeps
    # it so. `ftjob watch` is interactive: a SIGINT sent to it means stop.
    started = time.monotonic()

    def refresh(args: object) -> str:
        if time.monotonic() - started > 10:
            raise AssertionError("`ftjob watch` kept refreshing after SIGINT")
        return "table"

    monkeypatch.setattr(commands, "_get_table", refresh)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    timer = _interrupt_in(0.3)
    try:
        assert finetune_cli.main(["watch", "--interval", "0.05"]) == 130
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)


def test_the_pause_between_refreshes_ends_once_the_flag_is_set() -> None:
    # A Ctrl-C swallowed while the screen is printed: the pause must not run its full length.
    deadline = time.monotonic() + 0.2
    started = time.monotonic()
    interrupt.sleep(30, lambda: time.monotonic() > deadline)
    assert time.monotonic() - started < 5


# -- where `ftjob sandbox up` records its sandbox -------------------------------------------------------------


def test_records_live_in_xdg_runtime_dir_else_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert sandbox_record.records_dir() == tmp_path / "run" / "finetune-sandbox"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert sandbox_record.records_dir() == tmp_path / "cache" / "finetune-sandbox"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sandbox_record.records_dir() == tmp_path / "home" / ".cache" / "finetune-sandbox"


@pytest.fixture()
def sleeper() -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_a_record_counts_only_while_its_process_lives_and_its_pid_file_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    data_dir = tmp_path / "cluster"
    data_dir.mkdir()
    (data_dir / "sandbox.pid").write_text(str(sleeper.pid))
    sandbox_record.write(data_dir, sleeper.pid, "http://127.0.0.1:1")

    [record] = sandbox_record.read_all()
    assert (record.data_dir, record.pid, record.url) == (data_dir, sleeper.pid, "http://127.0.0.1:1")
    assert record == sandbox_record.lookup(data_dir)
    assert record.running()
    if record.started is not None:  # Linux: a later process with the same pid is not this one
        assert not sandbox_record.Record(data_dir, sleeper.pid, started="1").running()
    (data_dir / "sandbox.pid").write_text("1")
    assert not record.running()
    (data_dir / "sandbox.pid").write_text(str(sleeper.pid))
    sleeper.kill()
    sleeper.wait()
    assert not record.running()

    sandbox_record.forget(record)
    assert sandbox_record.read_all() == []
    assert not (data_dir / "sandbox.pid").exists()


def test_a_file_that_is_not_a_record_is_removed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    folder = sandbox_record.records_dir()
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text("{half")
    assert sandbox_record.read_all() == []
    assert not (folder / "broken.json").exists()
