"""What travels over HTTP: JSON responses, request bodies (JSON, YAML, kubectl's protobuf), query flags, and
errors answered as Status objects (the middleware)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import yaml
from aiohttp import web

from . import protobuf
from .errors import ApiError, status_object

logger = logging.getLogger(__name__)
JSON = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), status=status, content_type=JSON, headers=headers
    )


def flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


async def read_body(request: web.Request, optional: bool = False) -> Any:
    """The request's object: JSON, YAML, or protobuf for the kinds kubectl's typed commands send; None for an
    empty `optional` body."""
    raw = await request.read()
    if not raw.strip():
        if optional:
            return None
        raise ApiError(400, "the request has no body; send the object as JSON")
    content_type = request.headers.get("Content-Type", JSON).split(";")[0].strip()
    if content_type == "application/vnd.kubernetes.protobuf":
        return protobuf.decode(raw)  # kubectl's typed commands (create namespace/configmap/secret)
    if "protobuf" in content_type or "cbor" in content_type:
        raise ApiError(
            415,
            "the body of the request was in an unknown format - accepted media types "
            "include: application/json, application/yaml",
        )
    try:
        if content_type in ("application/yaml", "application/apply-patch+yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(
            400, f"the request body is not valid {'YAML' if 'yaml' in content_type else 'JSON'}: {exc}"
        ) from exc


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.status(), exc.code)
    except web.HTTPException as exc:
        if exc.status >= 400:
            reason = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status, "BadRequest")
            return json_response(status_object(exc.status, exc.reason or "error", reason), exc.status)
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:  # noqa: BLE001 - a server bug must still answer with a Status, and be logged
        logger.exception("internal error serving %s %s", request.method, request.path_qs)
        return json_response(status_object(500, f"internal error: {exc!r}", "InternalError"), 500)
