"""The "restricted" Pod Security Standard settings every pod running the trainer image gets."""

from __future__ import annotations

from typing import Any

# The trainer image's non-root user.
TRAINER_UID = 1000


def restricted_pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        # Makes the writable output claim writable for the non-root trainer.
        "fsGroup": TRAINER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security_context() -> dict[str, Any]:
    # A read-only root filesystem: what the image may write goes to emptyDirs and the output claim.
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
