"""Timestamps and status conditions shared by the sandbox's controllers (pure functions)."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """The controllers' only clock: tests pass their own `now` to the pure planners instead."""
    return dt.datetime.now(dt.timezone.utc)


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def find_condition(conditions: list[dict] | None, type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def condition_is_true(conditions: list[dict] | None, type_: str) -> bool:
    condition = find_condition(conditions, type_)
    return bool(condition and condition.get("status") == "True")


def set_condition(
    conditions: list[dict] | None,
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: dt.datetime,
    *,
    probe_time: bool = False,
) -> list[dict]:
    """A new list with `type_` set; lastTransitionTime moves only when the status flips (API conventions)."""
    stamp = format_time(now)
    result = []
    found = False
    for condition in conditions or []:
        if condition.get("type") != type_:
            result.append(condition)
            continue
        found = True
        updated = {**condition, "status": status, "reason": reason, "message": message}
        if condition.get("status") != status:
            updated["lastTransitionTime"] = stamp
        if probe_time:
            updated["lastProbeTime"] = stamp
        result.append(updated)
    if not found:
        new = {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": stamp}
        if probe_time:
            new["lastProbeTime"] = stamp
        result.append(new)
    return result
