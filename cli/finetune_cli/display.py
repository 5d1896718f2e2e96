"""What `ftjob` prints, from FineTuneJob objects (pure: objects in, text out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from finetune_operator.search.status import describe_parameters
from finetune_operator.status import parse_timestamp

COLUMNS = ("NAMESPACE", "NAME", "PHASE", "PROGRESS", "STEP", "LOSS", "ETA", "BEST", "GPUS", "QUEUE", "AGE")


def human_duration(seconds: float | None) -> str:
    """kubectl-style short durations: 45s, 4m10s, 2h5m, 3d4h."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def _fmt(value: Any, spec: str = "") -> str:
    if value is None or value == "":
        return "-"
    return format(value, spec) if spec else str(value)


def row(ftj: dict[str, Any], now: datetime) -> tuple[str, ...]:
    meta, status = ftj["metadata"], ftj.get("status") or {}
    progress = status.get("progress") or {}
    created = parse_timestamp(meta.get("creationTimestamp"))
    queue = ((ftj.get("spec") or {}).get("scheduling") or {}).get("queueName")
    percent = progress.get("percent")
    return (
        meta.get("namespace", ""),
        meta["name"],
        status.get("phase") or "Pending",
        f"{percent}%" if percent is not None else "-",
        _fmt(progress.get("step")),
        _fmt(progress.get("loss"), ".4f"),
        progress.get("eta") or "-",
        _fmt((status.get("bestTrial") or {}).get("objectiveValue"), ".4g"),
        _fmt(status.get("gpus")),
        queue or "-",
        human_duration((now - created).total_seconds()) if created else "-",
    )


def table(rows: list[tuple[str, ...]], headers: tuple[str, ...] = COLUMNS) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["   ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in (headers, *rows)]
    return "\n".join(lines)


def progress_bar(status: dict[str, Any], width: int = 30) -> str:
    """One line for the demo's live view: phase, bar, step, loss, ETA — only what the status says."""
    phase = status.get("phase") or "Pending"
    progress = status.get("progress") or {}
    percent = progress.get("percent")
    if percent is None:
        return f"{phase:<9} {status.get('message', '')}"[:120]
    filled = int(width * min(100, max(0, percent)) / 100)
    bar = "#" * filled + "-" * (width - filled)
    parts = [f"{phase:<9} [{bar}] {percent:3d}%"]
    if progress.get("step") is not None:
        total = progress.get("totalSteps")
        parts.append(f"step {progress['step']}/{total}" if total else f"step {progress['step']}")
    if progress.get("loss") is not None:
        parts.append(f"loss {progress['loss']:.4f}")
    if progress.get("eta"):
        parts.append(f"ETA {progress['eta']}")
    return "  ".join(parts)


def _restart_lines(status: dict[str, Any]) -> list[str]:
    """A multi-rank job's gang restarts: how many, and which rank ended the last attempt, and why."""
    last = status.get("lastRestart")
    if not last:
        return []
    counted = "counted against backoffLimit" if last.get("counted") else "not counted (disruption)"
    lines = [
        f"Restarts:    {status.get('restarts', 0)}; last at {last.get('time', '-')}: rank {last.get('rank', '?')} "
        f"(pod {last.get('pod', '?')}, exit code {last.get('exitCode', '-')}) {last.get('reason')}, {counted}",
        f"             {last.get('message', '')}",
    ]
    if last.get("logTail"):
        lines.append("             its last log lines:")
        lines.extend(f"               {line}" for line in last["logTail"].splitlines())
    return lines


def describe(ftj: dict[str, Any], events: list[dict[str, Any]], now: datetime) -> str:
    meta, spec, status = ftj["metadata"], ftj.get("spec") or {}, ftj.get("status") or {}
    lines = [
        f"Name:        {meta['name']}",
        f"Namespace:   {meta.get('namespace', '')}",
        f"Task:        {spec.get('task', '-')}",
        f"Model:       {(spec.get('model') or {}).get('source', '-')}",
        f"Method:      {(spec.get('method') or {}).get('type', 'full')}",
        f"Output:      {(spec.get('output') or {}).get('uri', '-')}",
        f"Phase:       {status.get('phase', 'Pending')}",
        f"Reason:      {status.get('reason', '-')}",
        f"Message:     {status.get('message', '-')}",
        f"Training Job: {status.get('jobName', '-')}   GPUs: {_fmt(status.get('gpus'))}   Retries: {status.get('retries', 0)}",
        f"Started:     {status.get('startTime', '-')}   Finished: {status.get('completionTime', '-')}",
    ]
    progress = status.get("progress")
    if progress:
        lines.append("Progress:    " + progress_bar(status))
    failure = status.get("failure")
    if failure:
        lines.append(f"Failure:     {failure.get('reason')}: {failure.get('message')}")
    lines.extend(_restart_lines(status))
    lines.extend(_search_lines(status))
    lines.append("Conditions:")
    conditions = status.get("conditions") or []
    if conditions:
        lines.append(
            _indent(
                table(
                    [
                        (c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", ""))
                        for c in conditions
                    ],
                    ("TYPE", "STATUS", "REASON", "MESSAGE"),
                )
            )
        )
    else:
        lines.append("  (none yet: the operator has not reconciled this job)")
    lines.append("Events:")
    if events:

        def when(event: dict[str, Any]) -> str:
            stamp = parse_timestamp(
                event.get("lastTimestamp")
                or event.get("eventTime")
                or (event.get("metadata") or {}).get("creationTimestamp")
            )
            return human_duration((now - stamp).total_seconds()) if stamp else "-"

        lines.append(
            _indent(
                table(
                    [(e.get("type", ""), e.get("reason", ""), when(e), e.get("message", "")) for e in events],
                    ("TYPE", "REASON", "AGE", "MESSAGE"),
                )
            )
        )
    else:
        lines.append("  (none)")
    return "\n".join(lines)


def _search_lines(status: dict[str, Any]) -> list[str]:
    """A search's objective, best trial and one row per trial."""
    search = status.get("search")
    if not search:
        return []
    lines = [f"Search:      {search.get('algorithm')}, {search.get('goal')} {search.get('metric')}"]
    best = status.get("bestTrial")
    if best:
        lines.append(
            f"Best trial:  {best['name']} {search.get('metric')}={best.get('objectiveValue'):.4g}  "
            f"({describe_parameters(best.get('parameters') or {})})  output {best.get('outputUri', '-')}"
        )
    rows = [
        (
            t["name"],
            t["state"],
            _fmt(t.get("objectiveValue"), ".4g"),
            f"{_fmt(t.get('step'))}/{_fmt(t.get('totalSteps'))}",
            describe_parameters(t.get("parameters") or {}),
            t.get("message", "") if t["state"] in ("EarlyStopped", "Failed") else "",
        )
        for t in status.get("trials") or []
    ]
    lines.append("Trials:")
    lines.append(
        _indent(table(rows, ("TRIAL", "STATE", "OBJECTIVE", "STEP", "PARAMETERS", "WHY"))) if rows else "  (none yet)"
    )
    return lines


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
