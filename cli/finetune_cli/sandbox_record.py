"""Where `ftjob sandbox up` records the sandboxes it runs, so that `ftjob sandbox down` finds them from anywhere.

One JSON file per running sandbox (its data folder, pid, the process's start time and the API server's URL)
in a per-user folder: `$XDG_RUNTIME_DIR/finetune-sandbox` (a per-user tmpfs that the login session clears),
else `${XDG_CACHE_HOME:-~/.cache}/finetune-sandbox`. `up` writes its record once the API server serves and
removes it when it stops; a record whose process is gone (the sandbox was killed) is stale, and `down` removes it.
The data folder's `sandbox.pid` stays the authority: a record counts only while that file names the same pid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

PID_FILE = "sandbox.pid"


def records_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "finetune-sandbox"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "finetune-sandbox"


def process_start(pid: int) -> str | None:
    """When the process started (Linux: /proc/PID/stat's starttime), to tell it from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces; starttime is field 22.
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class Record:
    data_dir: Path
    pid: int
    url: str = ""
    started: str | None = None

    @property
    def path(self) -> Path:
        return record_path(self.data_dir)

    def running(self) -> bool:
        """The process lives, is the one that wrote the record, and the data folder's pid file names it."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, another user's (records are per user, so unusual)
        if self.started is not None and process_start(self.pid) not in (None, self.started):
            return False
        return read_pid(self.data_dir) == self.pid


def record_path(data_dir: Path) -> Path:
    return records_dir() / (hashlib.sha256(str(data_dir).encode()).hexdigest()[:16] + ".json")


def read_pid(data_dir: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((data_dir / PID_FILE).read_text())
    return None


def write(data_dir: Path, pid: int, url: str) -> Path:
    """Record a sandbox that serves (atomically: `down` never reads half a file). Raises OSError."""
    record = Record(data_dir, pid, url, process_start(pid))
    record.path.parent.mkdir(parents=True, exist_ok=True)
    temporary = record.path.with_suffix(f".{pid}.tmp")
    temporary.write_text(
        json.dumps({"dataDir": str(data_dir), "pid": pid, "url": url, "started": record.started}) + "\n"
    )
    temporary.replace(record.path)
    return record.path


def remove(data_dir: Path) -> None:
    with contextlib.suppress(OSError):
        record_path(data_dir).unlink()


def _read(path: Path) -> Record | None:
    try:
        raw = json.loads(path.read_text())
        return Record(Path(raw["dataDir"]), int(raw["pid"]), str(raw.get("url", "")), raw.get("started"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def read_all() -> list[Record]:
    """Every record, stale ones included; files that are not records are removed."""
    records = []
    for path in sorted(records_dir().glob("*.json")):
        record = _read(path)
        if record is None:
            with contextlib.suppress(OSError):
                path.unlink()
        else:
            records.append(record)
    return records


def lookup(data_dir: Path) -> Record | None:
    """The sandbox whose pid file is in `data_dir`, with its record's details where they match; None: no pid file."""
    pid = read_pid(data_dir)
    if pid is None:
        return None
    record = _read(record_path(data_dir))
    if record is not None and record.pid == pid and record.data_dir == data_dir:
        return record
    return Record(data_dir, pid)


def forget(record: Record) -> None:
    """Remove a stopped sandbox's record and, if it still names that sandbox, its pid file."""
    if read_pid(record.data_dir) == record.pid:
        with contextlib.suppress(OSError):
            (record.data_dir / PID_FILE).unlink()
    remove(record.data_dir)
