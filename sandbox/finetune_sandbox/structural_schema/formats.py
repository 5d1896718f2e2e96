"""String formats and patterns as the API server checks them: RFC 3339 dates, and regular expressions with
Go's meaning of `$`."""

from __future__ import annotations

import datetime
import functools
import re

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def valid_date(value: str, fmt: str) -> bool:
    if not (_DATE_TIME if fmt == "date-time" else _DATE).match(value):
        return False
    try:
        datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=512)
def go_regex(pattern: str) -> re.Pattern[str]:
    """Compile an OpenAPI pattern with Go's meaning of `$` (end of text: Python's `\\Z`), so a trailing
    newline cannot sneak past `^...$` as it would with Python's `$`."""
    out, index, in_class = [], 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class and char == "]":
            in_class = False
        elif not in_class and char == "[":
            in_class = True
            # A `]` first in a class (after an optional `^`) is a literal in Go's syntax, as in Python's.
            opening = "[^]" if pattern.startswith("[^]", index) else "[]" if pattern.startswith("[]", index) else ""
            if opening:
                out.append(opening)
                index += len(opening)
                continue
        elif not in_class and char == "$":
            char = r"\Z"
        out.append(char)
        index += 1
    return re.compile("".join(out))
