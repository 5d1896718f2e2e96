"""Kubernetes `Status` errors: raised anywhere in the server, rendered as real `Status` objects."""

from __future__ import annotations

from typing import Any

_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


class ApiError(Exception):
    """An API failure with the HTTP code, reason and details a real API server would send."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        return status_object(self.code, self.message, self.reason, self.details)


def status_object(code: int, message: str, reason: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, f'{qualified} "{name}" not found', details={"name": name, "group": group, "kind": resource})


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(
        409,
        f'{qualified} "{name}" already exists',
        reason="AlreadyExists",
        details={"name": name, "group": group, "kind": resource},
    )


def conflict(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been '
        f"modified; please apply your changes to the latest version and try again",
        reason="Conflict",
        details={"name": name, "group": group, "kind": resource},
    )


def invalid(kind: str, name: str, causes: list[tuple[str, ...]], group: str = "") -> ApiError:
    """422 Invalid listing every cause, `(field, message)` or `(field, message, reason)`, with the real server's
    message (`apierrors.NewInvalid`: one cause as is, several as `[a, b]`)."""
    seen: list[str] = []
    for cause in causes:
        text = f"{cause[0]}: {cause[1]}" if cause[0] else cause[1]
        if text not in seen:
            seen.append(text)
    summary = seen[0] if len(seen) == 1 else "[" + ", ".join(seen) + "]"
    return ApiError(
        422,
        f'{kind}{"." + group if group else ""} "{name}" is invalid: {summary}',
        reason="Invalid",
        details={
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [
                {"reason": cause[2] if len(cause) > 2 else "FieldValueInvalid", "message": cause[1], "field": cause[0]}
                for cause in causes
            ],
        },
    )


def forbidden(resource: str, name: str, why: str, group: str = "") -> ApiError:
    """403 as admission refuses (`admission.NewForbidden`): `pods "x" is forbidden: <why>`."""
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(
        403,
        f'{qualified} "{name}" is forbidden: {why}',
        reason="Forbidden",
        details={"name": name, "group": group, "kind": resource},
    )
