"""The in-memory object store: objects, one global resourceVersion counter, each resource's event history
(history.py) and watchers.

Objects are treated as immutable once stored: every write stores a new dict, so readers and watch
events can share references without copying, and each event is serialised at most once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any, Callable, Iterator

from .errors import ApiError
from .history import UPPER_BOUND, History

TypeKey = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str, str, str]  # (group, plural, namespace, name); namespace "" if cluster-scoped


@dataclasses.dataclass
class Event:
    type: str  # ADDED / MODIFIED / DELETED
    key: ObjKey
    obj: dict[str, Any]
    old: dict[str, Any] | None
    rv: int
    _line: bytes | None = None

    def line(self, api_version: str | None = None, type_: str | None = None) -> bytes:
        """The watch-stream line; cached for the common case (stored apiVersion, unfiltered type)."""
        if (api_version is None or api_version == self.obj.get("apiVersion")) and type_ in (None, self.type):
            if self._line is None:
                self._line = _dump({"type": self.type, "object": self.obj})
            return self._line
        obj = self.obj if api_version is None else {**self.obj, "apiVersion": api_version}
        return _dump({"type": type_ or self.type, "object": obj})


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


class Watcher:
    """One watch stream's subscription: events filtered by namespace and selector, handed out in batches.

    A plain list and one future (rather than an asyncio.Queue and wait_for) keep the per-event cost low
    when many watchers follow a busy resource.
    """

    def __init__(
        self, store: "Store", type_key: TypeKey, namespace: str | None, matcher: Callable[[dict[str, Any]], bool] | None
    ) -> None:
        self.store = store
        self.type_key = type_key
        self.namespace = namespace
        self.matcher = matcher
        self.closed = False
        self._items: list[tuple[str, Event]] = []
        self._waiter: asyncio.Future[None] | None = None

    def _push(self, type_: str, event: Event) -> None:
        self._items.append((type_, event))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def offer(self, event: Event) -> None:
        if self.namespace is not None and event.key[2] != self.namespace:
            return
        if self.matcher is None:
            self._push(event.type, event)
            return
        new_match = self.matcher(event.obj)
        old_match = event.old is not None and self.matcher(event.old)
        if event.type == "DELETED":
            if old_match or new_match:
                self._push("DELETED", event)
        elif new_match and old_match:
            self._push("MODIFIED", event)
        elif new_match:
            self._push("ADDED", event)
        elif old_match:
            self._push("DELETED", event)

    def drain(self) -> list[tuple[str, Event]]:
        items, self._items = self._items, []
        return items

    async def next_batch(self, timeout: float) -> list[tuple[str, Event]]:
        """Wait up to `timeout` seconds for events; an empty list means a timeout or a closed watcher."""
        if not self._items and not self.closed:
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            handle = loop.call_later(timeout, _wake, self._waiter)
            try:
                await self._waiter
            finally:
                handle.cancel()
                self._waiter = None
        return self.drain()

    def close(self) -> None:
        self.store._watchers.get(self.type_key, set()).discard(self)
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _wake(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


class Store:
    def __init__(self, history_size: int = UPPER_BOUND, clock: Callable[[], float] = time.monotonic) -> None:
        self._objects: dict[TypeKey, dict[str, dict[str, dict[str, Any]]]] = {}
        self._by_uid: dict[str, ObjKey] = {}
        self._dependents: dict[str, set[ObjKey]] = {}  # owner uid -> keys of objects that reference it
        self._rv = 0
        # One window per resource, as the API server's watch cache keeps (history.py).
        self._histories: dict[TypeKey, History[Event]] = {}
        self._history_size = history_size
        self._clock = clock
        self._watchers: dict[TypeKey, set[Watcher]] = {}
        self.listeners: list[Callable[[Event], None]] = []

    # --- reads --------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, group: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((group, plural), {}).get(namespace, {}).get(name)

    def get_by_uid(self, uid: str) -> dict[str, Any] | None:
        key = self._by_uid.get(uid)
        return self.get(*key) if key else None

    def has_uid(self, uid: str) -> bool:
        return uid in self._by_uid

    def list(self, group: str, plural: str, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        by_ns = self._objects.get((group, plural), {})
        if namespace is not None:
            yield from list(by_ns.get(namespace, {}).values())
            return
        for objs in list(by_ns.values()):
            yield from list(objs.values())

    def count(self, group: str, plural: str, namespace: str | None = None) -> int:
        by_ns = self._objects.get((group, plural), {})
        if namespace is not None:
            return len(by_ns.get(namespace, {}))
        return sum(len(objs) for objs in by_ns.values())

    def type_keys(self) -> list[TypeKey]:
        return list(self._objects)

    def dependents_of(self, uid: str) -> set[ObjKey]:
        return set(self._dependents.get(uid, ()))

    def owner_uids(self) -> list[str]:
        return list(self._dependents)

    def __len__(self) -> int:
        return len(self._by_uid)

    # --- writes -------------------------------------------------------------------------------

    def next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def put(self, key: ObjKey, obj: dict[str, Any]) -> dict[str, Any]:
        """Store `obj` (a fresh dict owned by the store from now on) under a new resourceVersion."""
        rv = self.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        by_name = self._objects.setdefault(key[:2], {}).setdefault(key[2], {})
        old = by_name.get(key[3])
        by_name[key[3]] = obj
        self._by_uid[obj["metadata"]["uid"]] = key
        self._reindex_owners(key, old, obj)
        self._emit(Event("MODIFIED" if old is not None else "ADDED", key, obj, old, rv))
        return obj

    def remove(self, key: ObjKey) -> dict[str, Any]:
        by_ns = self._objects.get(key[:2], {})
        current = by_ns.get(key[2], {}).pop(key[3], None)
        if current is None:
            raise ApiError(404, f'{key[1]} "{key[3]}" not found')
        if not by_ns.get(key[2]):
            by_ns.pop(key[2], None)
        self._by_uid.pop(current["metadata"].get("uid"), None)
        self._reindex_owners(key, current, None)
        rv = self.next_rv()
        final = {**current, "metadata": {**current["metadata"], "resourceVersion": str(rv)}}
        self._emit(Event("DELETED", key, final, current, rv))
        return final

    def _reindex_owners(self, key: ObjKey, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        old_uids = {r.get("uid") for r in (old or {}).get("metadata", {}).get("ownerReferences") or ()}
        new_uids = {r.get("uid") for r in (new or {}).get("metadata", {}).get("ownerReferences") or ()}
        for uid in old_uids - new_uids:
            deps = self._dependents.get(uid)
            if deps is not None:
                deps.discard(key)
                if not deps:
                    del self._dependents[uid]
        for uid in new_uids - old_uids:
            if uid:
                self._dependents.setdefault(uid, set()).add(key)

    def _emit(self, event: Event) -> None:
        self._history(event.key[:2]).append(event)
        for watcher in list(self._watchers.get(event.key[:2], ())):
            watcher.offer(event)
        for listener in self.listeners:
            listener(event)

    # --- watches ------------------------------------------------------------------------------

    def watch(
        self,
        group: str,
        plural: str,
        namespace: str | None,
        matcher: Callable[[dict[str, Any]], bool] | None,
        since: int | None,
    ) -> tuple[Watcher, list[tuple[str, Any]]]:
        """Subscribe; return the watcher and its backlog: current objects (since=None) or later events.

        Raises ApiError(410) when `since` is older than the retained history.
        """
        backlog: list[tuple[str, Any]] = []
        if since is None:
            for obj in self.list(group, plural, namespace):
                if matcher is None or matcher(obj):
                    backlog.append(("ADDED", obj))
        else:
            history = self._history((group, plural))
            if history.expired(since):
                raise ApiError(410, f"too old resource version: {since} ({history.dropped_rv + 1})", reason="Expired")
            if since > self._rv:
                # A resourceVersion from another (earlier) server: make the client relist.
                raise ApiError(410, f"too large resource version: {since}, current: {self._rv}", reason="Expired")
            probe = Watcher(self, (group, plural), namespace, matcher)
            for event in history.since(since):
                probe.offer(event)
            backlog.extend(probe.drain())
        watcher = Watcher(self, (group, plural), namespace, matcher)
        self._watchers.setdefault((group, plural), set()).add(watcher)
        return watcher, backlog

    def _history(self, type_key: TypeKey) -> History[Event]:
        history = self._histories.get(type_key)
        if history is None:
            history = self._histories[type_key] = History(upper_bound=self._history_size, clock=self._clock)
        return history

    def close_watchers(self, type_key: TypeKey | None = None) -> None:
        keys = [type_key] if type_key else list(self._watchers)
        for key in keys:
            for watcher in list(self._watchers.get(key, ())):
                watcher.close()

    def watcher_count(self) -> int:
        return sum(len(ws) for ws in self._watchers.values())
