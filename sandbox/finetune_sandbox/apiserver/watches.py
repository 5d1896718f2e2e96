"""Watches: a chunked stream of events from a resourceVersion (or the current state first), bookmarks, the
initial-events-end marker, and a one-row Table per event for `kubectl get -w`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import selectors
from .delivery import Deliveries
from .errors import ApiError
from .listing import request_matcher
from .objects import Objects
from .resources import ResourceType
from .store import Store, Watcher
from .tables import build_table
from .wire import JSON, flag, wants_table

Encode = Callable[[str, Any], bytes]


class Watches:
    def __init__(
        self,
        store: Store,
        objects: Objects,
        bookmark_interval: float,
        max_watch_seconds: float,
        stopping: asyncio.Event,
        deliveries: Deliveries | None = None,
    ) -> None:
        self.store = store
        self.deliveries = deliveries or Deliveries()
        self.objects = objects
        self.bookmark_interval = bookmark_interval
        self.max_watch_seconds = max_watch_seconds
        self.stopping = stopping  # set when the server stops: every watch ends

    async def serve(
        self, request: web.Request, rt: ResourceType, namespace: str | None, name: str | None = None
    ) -> web.StreamResponse:
        matcher = request_matcher(request)
        if name is not None:
            matcher = selectors.combine(matcher, lambda obj, n=name: obj["metadata"]["name"] == n)
        rv_text = request.query.get("resourceVersion", "")
        initial = flag(request, "sendInitialEvents")
        since = None if (initial or rv_text in ("", "0")) else _parse_rv(rv_text)
        timeout = min(float(request.query.get("timeoutSeconds") or self.max_watch_seconds), self.max_watch_seconds)
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        try:
            watcher, backlog = self.store.watch(
                rt.group, rt.plural, namespace if rt.namespaced else None, matcher, since
            )
        except ApiError as exc:
            if exc.code == 410:
                self.deliveries.refused_expired(request, rt.group, rt.plural)
            await response.prepare(request)
            await response.write(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
            await response.write_eof()
            return response
        deadline = time.monotonic() + timeout
        encode = self._encoder(request, rt)
        bookmarks = flag(request, "allowWatchBookmarks")
        try:
            await response.prepare(request)
            for type_, item in backlog:
                line = encode(type_, item)
                self.deliveries.add(request, rt.group, rt.plural, "watch", [_namespace(item)], len(line))
                await response.write(line)
            if initial and bookmarks:
                await response.write(self._bookmark(rt, initial_end=True))
            await self._stream(request, response, rt, watcher, deadline, bookmarks, encode)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away mid-stream (its timeout, a restart): normal for a watch
        finally:
            watcher.close()
        try:
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        rt: ResourceType,
        watcher: Watcher,
        deadline: float,
        bookmarks: bool,
        encode: Encode,
    ) -> None:
        """After the backlog: events as they come, bookmarks while none do, until the deadline or the server stops."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stopping.is_set():
                break
            wait = min(remaining, self.bookmark_interval) if bookmarks else remaining
            batch = await watcher.next_batch(wait)
            if batch:
                chunk = b"".join(encode(*item) for item in batch)
                namespaces = [_namespace(item) for _, item in batch]
                self.deliveries.add(request, rt.group, rt.plural, "watch", namespaces, len(chunk))
                await response.write(chunk)
            elif watcher.closed:
                break
            elif bookmarks and deadline - time.monotonic() > 0:
                await response.write(self._bookmark(rt))

    def _encoder(self, request: web.Request, rt: ResourceType) -> Encode:
        """One watch line per event; `kubectl get -w` asks for each object as a one-row Table."""
        table = wants_table(request)
        include_object = request.query.get("includeObject", "Metadata")

        def encode(type_: str, item: Any) -> bytes:
            if table:
                obj = item if isinstance(item, dict) else item.obj
                obj = self.objects.present(rt, obj)
                row = build_table(rt, [obj], obj["metadata"].get("resourceVersion"), include_object)
                return json.dumps({"type": type_, "object": row}, separators=(",", ":")).encode() + b"\n"
            if isinstance(item, dict):
                event = {"type": type_, "object": self.objects.present(rt, item)}
                return json.dumps(event, separators=(",", ":")).encode() + b"\n"
            return item.line(rt.api_version, type_)

        return encode

    def _bookmark(self, rt: ResourceType, initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return (
            json.dumps(
                {"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}}
            ).encode()
            + b"\n"
        )


def _namespace(item: Any) -> str:
    obj = item if isinstance(item, dict) else item.obj
    return obj["metadata"].get("namespace", "")


def _parse_rv(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiError(
            400, f"invalid resourceVersion {text!r}: it must be a resourceVersion this server returned"
        ) from None
