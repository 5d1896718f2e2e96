"""A raw HTTP client for tests of the server: every call returns (status code, decoded JSON body)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp


class RawClient:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> "RawClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        all_headers = {"Content-Type": content_type, **(headers or {})}
        async with self.session.request(
            method, self.url + path, data=data, headers=all_headers, params=params
        ) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text) if text else None
            except ValueError:
                return response.status, text

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, body, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, body, **kw)

    async def patch(self, path: str, body: Any, kind: str = "merge", **kw: Any) -> tuple[int, Any]:
        content_type = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }[kind]
        return await self.request("PATCH", path, body, content_type=content_type, **kw)

    async def delete(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, body, **kw)

    async def watch(
        self,
        path: str,
        params: dict[str, str] | None = None,
        max_events: int | None = None,
        until_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Collect watch events until the server closes the stream, `max_events` or an `until_type` event."""
        events = []
        query = {"watch": "true", **(params or {})}
        async with self.session.get(self.url + path, params=query, headers=headers) as response:
            async for line in response.content:
                if not line.strip():
                    continue
                events.append(json.loads(line))
                if (max_events and len(events) >= max_events) or (until_type and events[-1]["type"] == until_type):
                    break
        return events
