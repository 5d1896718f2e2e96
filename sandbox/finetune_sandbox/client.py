"""A small async Kubernetes REST client for the sandbox's controllers, CLI and tests.

Resources are addressed by (api_version, plural, namespace, name), e.g. ("batch/v1", "jobs", "default", "train").
It speaks plain HTTP without auth, as the sandbox API server does; it is not meant for real clusters
(the operator itself uses Kopf's client there).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)

PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class ApiError(Exception):
    """A non-2xx answer from the API server, with the Status object's reason and message."""

    def __init__(self, status: int, reason: str, message: str, body: dict | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection or object: core ("v1") lives under /api, groups under /apis."""
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = prefix
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name:
        path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
    elif subresource:
        raise ValueError(f"subresource {subresource!r} needs an object name")
    return path


def object_key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


class SandboxClient:
    """Async REST client; use as `async with SandboxClient(url) as client:` or call `close()`."""

    def __init__(self, base_url: str, *, request_timeout: float = 30.0, watch_timeout_seconds: int = 60) -> None:
        self.base_url = base_url.rstrip("/")
        self.request_timeout = request_timeout
        # Server-side watch timeout: the watch reconnects after it, so a silently dropped stream heals.
        self.watch_timeout_seconds = watch_timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict:
        data = None if body is None else json.dumps(body)
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        async with self._http().request(
            method, self.base_url + path, params=params, data=data, headers=headers, timeout=timeout
        ) as response:
            text = await response.text()
            payload = _parse_json(text)
            if response.status >= 400:
                raise _api_error(response.status, payload, text)
            return payload if isinstance(payload, dict) else {}

    async def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """The text of a pod container's log (`kubectl logs`)."""
        params = {"container": container} if container else None
        url = self.base_url + resource_path("v1", "pods", namespace, pod, "log")
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        async with self._http().get(url, params=params, timeout=timeout) as response:
            text = await response.text()
            if response.status >= 400:
                raise _api_error(response.status, _parse_json(text), text)
            return text

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict:
        return await self.request("GET", resource_path(api_version, plural, namespace, name))

    async def list(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict:
        """The List object (its `items` and `metadata.resourceVersion`), across namespaces when namespace is None."""
        params = _selector_params(label_selector, field_selector)
        return await self.request("GET", resource_path(api_version, plural, namespace), params=params)

    async def create(self, api_version: str, plural: str, namespace: str | None, body: dict) -> dict:
        return await self.request("POST", resource_path(api_version, plural, namespace), body=body)

    async def create_subresource(
        self, api_version: str, plural: str, namespace: str | None, name: str, subresource: str, body: dict
    ) -> dict:
        """POST to a subresource, e.g. a pod's `binding` or `eviction`."""
        return await self.request("POST", resource_path(api_version, plural, namespace, name, subresource), body=body)

    async def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: str = "merge",
        subresource: str | None = None,
    ) -> dict:
        if patch_type not in PATCH_CONTENT_TYPES:
            raise ValueError(f"patch_type {patch_type!r} is not one of {sorted(PATCH_CONTENT_TYPES)}")
        return await self.request(
            "PATCH",
            resource_path(api_version, plural, namespace, name, subresource),
            body=patch,
            content_type=PATCH_CONTENT_TYPES[patch_type],
        )

    async def delete(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        *,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
    ) -> dict:
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        params: dict[str, str] = {}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
            params["gracePeriodSeconds"] = str(grace_period_seconds)
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
            params["propagationPolicy"] = propagation_policy
        return await self.request(
            "DELETE", resource_path(api_version, plural, namespace, name), params=params or None, body=options
        )

    async def watch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        retry_delay: float = 0.5,
    ) -> AsyncIterator[tuple[str, dict]]:
        """Events (type, object) forever: ADDED/MODIFIED/DELETED.

        Without `resource_version` it first lists and yields every existing object as ADDED. Streams that end
        (server timeout, dropped connection) are resumed from the last seen resourceVersion; a 410 Gone
        (history compacted) relists, yields the current objects as MODIFIED (ADDED if new) and synthesises
        DELETED for objects that vanished meanwhile, so a consumer's view never goes stale.
        """
        known: dict[tuple[str, str], dict] = {}
        rv = resource_version
        if rv is None:
            rv, events = await self._relist(api_version, plural, namespace, label_selector, field_selector, known)
            for event in events:
                yield event
        while True:
            try:
                async for kind, obj in self._watch_stream(
                    api_version, plural, namespace, label_selector, field_selector, rv
                ):
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if kind == "BOOKMARK":
                        continue
                    key = object_key(obj)
                    if kind == "DELETED":
                        known.pop(key, None)
                    else:
                        known[key] = obj
                    yield kind, obj
            except _Gone:
                log.debug("watch %s %s: resourceVersion %s is gone, relisting", api_version, plural, rv)
                rv, events = await self._relist(api_version, plural, namespace, label_selector, field_selector, known)
                for event in events:
                    yield event
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError, ApiError) as error:
                log.debug("watch %s %s interrupted (%s); resuming from %s", api_version, plural, error, rv)
                await asyncio.sleep(retry_delay)

    async def _relist(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        known: dict[tuple[str, str], dict],
    ) -> tuple[str | None, list[tuple[str, dict]]]:
        listing = await self.list(
            api_version, plural, namespace, label_selector=label_selector, field_selector=field_selector
        )
        current = {object_key(item): item for item in listing.get("items") or []}
        events: list[tuple[str, dict]] = [("DELETED", obj) for key, obj in known.items() if key not in current]
        events += [("MODIFIED" if key in known else "ADDED", obj) for key, obj in current.items()]
        known.clear()
        known.update(current)
        return (listing.get("metadata") or {}).get("resourceVersion"), events

    async def _watch_stream(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        resource_version: str | None,
    ) -> AsyncIterator[tuple[str, dict]]:
        params = _selector_params(label_selector, field_selector) or {}
        params.update(
            {
                "watch": "true",
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(self.watch_timeout_seconds),
            }
        )
        if resource_version:
            params["resourceVersion"] = resource_version
        # No total timeout: the stream is long-lived; the server ends it after timeoutSeconds.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.request_timeout, sock_read=self.watch_timeout_seconds + 30
        )
        url = self.base_url + resource_path(api_version, plural, namespace)
        async with self._http().get(url, params=params, timeout=timeout) as response:
            if response.status == 410:
                raise _Gone()
            if response.status >= 400:
                text = await response.text()
                raise _api_error(response.status, _parse_json(text), text)
            async for line in _lines(response):
                event = _parse_json(line)
                if not isinstance(event, dict):
                    continue
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise _api_error(int(obj.get("code") or 500), obj, line)
                yield kind, obj


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    # readline() would fail on lines above aiohttp's buffer limit (big objects); split by hand instead.
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line.decode()
    if buffer.strip():
        yield buffer.decode()


def _selector_params(label_selector: str | None, field_selector: str | None) -> dict[str, str] | None:
    params = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params or None


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _api_error(status: int, payload: Any, text: str) -> ApiError:
    if isinstance(payload, dict):
        return ApiError(status, payload.get("reason") or "", payload.get("message") or text, payload)
    return ApiError(status, "", text.strip()[:500])


async def retry_on_conflict(action: Callable[[], Any], attempts: int = 5) -> Any:
    """Run an async read-modify-write `action` again when the server answers 409 Conflict."""
    for attempt in range(attempts):
        try:
            return await action()
        except ApiError as error:
            if error.status != 409 or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    return None
