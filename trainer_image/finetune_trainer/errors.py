"""Failure kinds the operator tells apart, their exit codes, and the termination message.

The codes and the message format are the pod contract (docs/pod-contract.md): the Job's
podFailurePolicy fails a job at once on the codes of FINAL_EXIT_CODES, so only raise those failures
when retrying cannot help.
"""

from __future__ import annotations

import json
import math
import os

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_INVALID_DATA = 3
EXIT_OUT_OF_MEMORY = 4
EXIT_COMMUNICATION_TIMEOUT = 5
# Object storage and the Hugging Face Hub (storage.py, sources.py): which store refused what, and why.
EXIT_STORAGE_ACCESS_DENIED = 6
EXIT_STORAGE_NOT_FOUND = 7
EXIT_STORAGE_UNAVAILABLE = 8
EXIT_STORAGE_REQUEST_REJECTED = 9
EXIT_HUB_UNREACHABLE = 10
# 128 + SIGTERM: the conventional code of a process that ended because of SIGTERM. We exit with it
# after saving a checkpoint so the kubelet (and a human) sees "stopped on request", not a crash.
EXIT_PREEMPTED = 143

TERMINATION_MESSAGE_LIMIT = 4096
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


# Termination-message reasons of a rank that stopped or failed because of another rank. The operator
# skips them when it names the rank whose failure restarted a multi-rank job (docs/pod-contract.md).
STOPPED = "Stopped"  # this rank got SIGTERM and stopped after saving a checkpoint
STOPPED_BY_PEER = "StoppedByPeer"  # another rank got SIGTERM; this one saved and stopped with it
PEER_LOST = "PeerLost"  # a collective failed because another rank's process went away

# What gloo and NCCL say when the other end of a collective's connection is gone.
_PEER_GONE = ("connection reset by peer", "connection closed by peer", "broken pipe", "remote process exited")


class TrainerFailure(Exception):
    """A failure the trainer recognised: its reason and exit code go into the pod contract as they are."""

    reason = "TrainerCrashed"
    exit_code = EXIT_CRASH
    # Whether another attempt can succeed; the Job's podFailurePolicy fails at once on the others' codes.
    final = False


class InvalidData(TrainerFailure):
    """Bad input that no retry can fix: a missing column, an empty file, an unknown label, a bad config."""

    reason = "InvalidData"
    exit_code = EXIT_INVALID_DATA
    final = True


class StorageFailure(TrainerFailure):
    """An object store (s3://) or the Hugging Face Hub refused or failed a request for `uri`.

    `code` is the store's own error code (AccessDenied, NoSuchBucket, SlowDown, ...) or, where the store
    gave none, the client's name for what went wrong (NoCredentials, EndpointConnectionError, ...). The
    message names the URI and the code and never a credential.
    """

    final = True

    def __init__(self, message: str, *, uri: str, code: str | None = None) -> None:
        super().__init__(message)
        self.uri = uri
        self.code = code


class StorageAccessDenied(StorageFailure):
    """The store refused the credentials or the request's permissions (HTTP 401/403, no credentials at all)."""

    reason = "StorageAccessDenied"
    exit_code = EXIT_STORAGE_ACCESS_DENIED


class StorageNotFound(StorageFailure):
    """No bucket, object or folder (or Hub repository, revision) at the URI."""

    reason = "StorageNotFound"
    exit_code = EXIT_STORAGE_NOT_FOUND


class StorageUnavailable(StorageFailure):
    """Throttling, a server error or no connection, still so after the trainer's own retries: the next
    attempt of the Job may succeed."""

    reason = "StorageUnavailable"
    exit_code = EXIT_STORAGE_UNAVAILABLE
    final = False


class StorageRequestRejected(StorageFailure):
    """The store refused the request for another reason that a retry cannot change: a wrong region
    (PermanentRedirect, AuthorizationHeaderMalformed), a TLS certificate it does not accept (SSLError), ..."""

    reason = "StorageRequestRejected"
    exit_code = EXIT_STORAGE_REQUEST_REJECTED


class HubUnreachable(StorageFailure):
    """The Hugging Face Hub cannot be reached (HF_HUB_OFFLINE, no route, refused) and the model is not
    cached: an offline cluster stays offline, so the job fails at once."""

    reason = "HubUnreachable"
    exit_code = EXIT_HUB_UNREACHABLE


# Every failure class the trainer raises, for the reason -> exit code table of the pod contract.
KNOWN_FAILURES = (
    InvalidData,
    StorageAccessDenied,
    StorageNotFound,
    StorageUnavailable,
    StorageRequestRejected,
    HubUnreachable,
)
# The pod's exit code for a reason a worker wrote (the launcher restores it from torchrun's 1).
EXIT_CODES_BY_REASON = {failure.reason: failure.exit_code for failure in KNOWN_FAILURES}
# The exit codes that no retry can change: the operator's podFailurePolicy fails the Job at once on them.
FINAL_EXIT_CODES = tuple(sorted(failure.exit_code for failure in KNOWN_FAILURES if failure.final))


def classify_exception(exc: BaseException) -> tuple[int, str]:
    """Map an exception escaping training to (exit code, reason) per the pod contract."""
    if isinstance(exc, TrainerFailure):
        return exc.exit_code, exc.reason
    if isinstance(exc, MemoryError):
        return EXIT_OUT_OF_MEMORY, "OutOfMemory"
    name = type(exc).__name__
    text = str(exc).lower()
    if name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and "out of memory" in text):
        return EXIT_OUT_OF_MEMORY, "OutOfMemory"
    if name in ("DistBackendError", "DistNetworkError", "DistStoreError") and (
        "timeout" in text or "timed out" in text
    ):
        return EXIT_COMMUNICATION_TIMEOUT, "CommunicationTimeout"
    if isinstance(exc, (RuntimeError, ConnectionError)) and any(words in text for words in _PEER_GONE):
        # Still a crash for the Job (it restarts the gang), but not this rank's own fault.
        return EXIT_CRASH, PEER_LOST
    return EXIT_CRASH, "TrainerCrashed"


def termination_message(reason: str, message: str) -> str:
    """The JSON termination message, cut so that it fits the kubelet's 4096-byte limit."""
    body = {"reason": reason, "message": message}
    text = json.dumps(body)
    while len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        body["message"] = (
            body["message"][: max(0, len(body["message"]) - (len(text.encode()) - TERMINATION_MESSAGE_LIMIT) - 4)] + "…"
        )
        text = json.dumps(body)
    return text


def completion_message(step: int, metrics: dict) -> str:
    """The success termination message: `trained to step N` and the final finite metrics, within 4096 bytes.

    The operator reads a search trial's objective from `metrics`; when they do not all fit, the
    longest names go first (they are the least likely to be an objective such as eval_loss).
    """
    numbers = {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }
    body = {"reason": "Completed", "message": f"trained to step {step}", "metrics": numbers}
    text = json.dumps(body, sort_keys=True)
    for key in sorted(numbers, key=lambda k: (-len(k), k)):
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
            break
        del numbers[key]
        text = json.dumps(body, sort_keys=True)
    return text


def termination_log_path(environ: dict | os._Environ = os.environ) -> str | None:
    """Where to write the termination message: FINETUNE_TERMINATION_LOG, else /dev/termination-log if writable."""
    path = environ.get("FINETUNE_TERMINATION_LOG")
    if path:
        return path
    if os.path.exists(DEFAULT_TERMINATION_LOG) and os.access(DEFAULT_TERMINATION_LOG, os.W_OK):
        return DEFAULT_TERMINATION_LOG
    return None


def write_termination_message(reason: str, message: str, environ: dict | os._Environ = os.environ) -> None:
    write_termination_text(termination_message(reason, message), environ)


def write_termination_text(text: str, environ: dict | os._Environ = os.environ) -> None:
    """Write an already formatted termination message (see termination_message, completion_message)."""
    path = termination_log_path(environ)
    if path is None:
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        # The message is a courtesy; failing to write it must not hide the real failure (or success).
        pass
