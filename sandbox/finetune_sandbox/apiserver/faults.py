"""Fault injection for reliability tests: fail or drop matching requests a given number of times."""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass
class FaultRule:
    method: str | None
    path_regex: re.Pattern[str]
    status: int  # 0: drop the connection without a response
    times: int | None  # None: forever
    message: str
    hits: int = 0

    def matches(self, method: str, path_qs: str) -> bool:
        return (
            (self.method is None or self.method == method.upper())
            and bool(self.path_regex.search(path_qs))
            and (self.times is None or self.hits < self.times)
        )


class Faults:
    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def add(
        self,
        method: str | None = None,
        path_regex: str = ".*",
        status: int = 500,
        times: int | None = 1,
        message: str = "injected fault",
    ) -> FaultRule:
        """Fail the next `times` requests whose method and path (with query) match; status 0 drops them."""
        rule = FaultRule(method.upper() if method else None, re.compile(path_regex), status, times, message)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def take(self, method: str, path_qs: str) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(method, path_qs):
                rule.hits += 1
                return rule
        return None
