"""Removing credentials from text the operator republishes (a failed trainer's log tail and message).

The operator never holds secret values (Secrets reach pods by reference), but a trainer may print one:
a stack trace with a URL carrying a token, a library echoing its environment. Whatever the operator
copies into `status.failure` is readable by anyone who can read the FineTuneJob, so it goes through
`redact` first. Pure and conservative: a false positive costs a few characters of a log line.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

# Setting names whose values are credentials: HF_TOKEN, hub-token, AWS_SECRET_ACCESS_KEY, DB_PASSWORD,
# api_key, client_secret. The secret word must end the name, so `tokenizer` or `num_tokens` are not hits.
# Names start at a boundary and are bounded: a long run of name characters (a 100 kB line of "a")
# must cost linear time, not quadratic backtracking.
_SECRET_NAME = (
    r"[A-Za-z0-9_.-]{0,64}?(?:TOKEN|SECRET|SECRET[-_]?(?:ACCESS[-_]?)?KEY|PASSWORD|PASSWD|PASSPHRASE|"
    r"API[-_]?KEY|ACCESS[-_]?KEY|PRIVATE[-_]?KEY|CREDENTIALS?|AUTH)(?![A-Za-z0-9_])"
)
# Tokenizer settings that end in "token" but hold vocabulary, not credentials.
_VOCABULARY_TOKENS = re.compile(r"(?i)(?:^|[-_.])(?:pad|eos|bos|unk|sep|cls|mask|additional_special)[-_]?tokens?$")

# (pattern, replacement): each keeps the label and replaces only the credential.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization headers echoed in tracebacks and debug logs, with or without a scheme word.
    (
        re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;]+"),
        rf"\g<1>{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\g<1>{REDACTED}"),
    # Hugging Face tokens.
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), REDACTED),
    # AWS access key ids (AKIA long-term, ASIA temporary).
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
    # Passwords in URLs: scheme://user:password@host.
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+(?=@)"), rf"\g<1>{REDACTED}"),
)
# NAME=value, NAME: value, "NAME": "value" and --name value, for secret-looking names.
_ASSIGNMENT = re.compile(
    r"(?i)(?<![A-Za-z0-9_.-])(?P<name>(?P<flag>--)?" + _SECRET_NAME + r"[\"']?)(?P<sep>\s*[=:]\s*|(?(flag)\s+|(?!)))"
    r"(?P<quote>[\"']?)(?P<value>[^\s\"',;&}]+)"
)
# An AWS secret access key on its own: 40 characters of the base64 alphabet.
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def _assignment(match: re.Match[str]) -> str:
    name = match.group("name").strip("\"'-")
    if match.group("value") == REDACTED or _VOCABULARY_TOKENS.search(name):
        return match.group(0)
    return f"{match.group('name')}{match.group('sep')}{match.group('quote')}{REDACTED}"


def _looks_like_aws_secret(candidate: str) -> bool:
    # Mixed case plus digits or symbols: not a word, a path or a hex digest.
    return (
        any(c.islower() for c in candidate)
        and any(c.isupper() for c in candidate)
        and any(c.isdigit() or c in "/+" for c in candidate)
    )


def redact(text: str) -> str:
    """`text` with bearer tokens and Authorization headers, hf_ tokens, AWS access and secret keys,
    URL passwords and the values of secret-looking settings (`password=`, `token:`, `HF_TOKEN=`,
    `--api-key x`) replaced by [REDACTED]."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    text = _ASSIGNMENT.sub(_assignment, text)
    return _AWS_SECRET.sub(lambda m: REDACTED if _looks_like_aws_secret(m.group(0)) else m.group(0), text)


def tail(text: str, *, max_lines: int, max_bytes: int) -> str:
    """The last `max_lines` lines of `text`, then only as many whole trailing characters as fit `max_bytes` UTF-8 bytes."""
    lines = text.splitlines()[-max_lines:] if max_lines > 0 else []
    out = "\n".join(lines)
    encoded = out.encode()
    if len(encoded) <= max_bytes:
        return out
    # Cut at the front (the newest lines matter most), never inside a multi-byte character.
    return encoded[len(encoded) - max_bytes :].decode(errors="ignore")
