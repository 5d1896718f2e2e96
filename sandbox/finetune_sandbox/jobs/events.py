"""Events a controller posts, as client-go's event recorder and correlator (tools/record) post them.

- **Repeats** (same source, object, type, reason and message) are one Event: its `count` and `lastTimestamp`
  grow by a PATCH, so `kubectl describe` shows `(x6 over 12m)`.
- **Similar events** (same source, object, type and reason, different messages): once 10 distinct messages
  were seen within 10 minutes, the next ones become a single Event whose message is
  `(combined from similar events): <latest message>`, counted like a repeat. A Job whose pods a quota refuses
  gets such messages: each refused pod had a new generated name.
- **Spam filter**: at most 25 events per source and object in a burst, then one more every 5 minutes; a
  filtered event is not posted, but its count is remembered and shows in the next one posted.

Recording is best effort, as upstream: a failure to post is logged and never stops the controller.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import time
from collections.abc import Callable

from ..client import ApiError, SandboxClient
from ..conditions import format_time

log = logging.getLogger(__name__)

WARNING = "Warning"
NORMAL = "Normal"
MAX_REMEMBERED = 4096  # client-go's LRU caches
SIMILAR_EVENTS = 10  # the aggregator's maxEvents
SIMILAR_WINDOW_SECONDS = 600.0
SPAM_BURST = 25
SPAM_REFILL_PER_SECOND = 1.0 / 300.0
COMBINED_PREFIX = "(combined from similar events): "


def object_reference(obj: dict) -> dict:
    """The ObjectReference to `obj` (what `involvedObject` holds)."""
    meta = obj.get("metadata") or {}
    reference = {
        "apiVersion": obj.get("apiVersion", ""),
        "kind": obj.get("kind", ""),
        "namespace": meta.get("namespace", "default"),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
    }
    if meta.get("resourceVersion"):
        reference["resourceVersion"] = meta["resourceVersion"]
    return reference


class _Lru(collections.OrderedDict):
    def remember(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > MAX_REMEMBERED:
            self.popitem(last=False)


class EventRecorder:
    """One controller's recorder (`source.component`); `now` stamps events, `monotonic` paces the filters."""

    def __init__(
        self,
        client: SandboxClient,
        component: str,
        now: Callable[[], dt.datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.component = component
        self.now = now
        self.monotonic = monotonic
        self._similar = _Lru()  # (object, type, reason) -> (messages seen, last seen)
        self._observed = _Lru()  # event key -> (namespace, name, count, firstTimestamp)
        self._tokens = _Lru()  # object -> (tokens, last refill)
        self._last_ns = 0
        self.posted = 0  # events created or patched (for tests)

    async def record(self, involved: dict, type_: str, reason: str, message: str) -> None:
        now, tick = self.now(), self.monotonic()
        obj = tuple(involved.get(k, "") for k in ("kind", "namespace", "name", "uid", "apiVersion"))
        key: tuple = (*obj, involved.get("fieldPath", ""), type_, reason, message)
        # The aggregator: the 10th distinct message of a kind within 10 minutes turns into one combined event.
        similar = (*obj, type_, reason)
        messages, last = self._similar.get(similar, (set(), None))
        if last is None or tick - last > SIMILAR_WINDOW_SECONDS:
            messages = set()
        messages = messages | {message}
        if len(messages) >= SIMILAR_EVENTS:
            messages.pop()  # upstream keeps the set just below the threshold (PopAny)
            key, message = similar, COMBINED_PREFIX + message
        self._similar.remember(similar, (messages, tick))
        # The logger: a repeat continues the event it repeats.
        seen = self._observed.get(key)
        stamp = format_time(now)
        if seen is None:
            namespace, name, count, first = involved["namespace"], self._name(involved["name"]), 1, stamp
        else:
            namespace, name, count, first = seen[0], seen[1], seen[2] + 1, seen[3]
        self._observed.remember(key, (namespace, name, count, first))
        if not self._allowed(obj, tick):
            return
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": "",
            "firstTimestamp": first,
            "lastTimestamp": stamp,
            "count": count,
        }
        try:
            if count > 1:
                try:
                    patch = {"count": count, "lastTimestamp": stamp, "message": message}
                    await self.client.patch("v1", "events", namespace, name, patch)
                    self.posted += 1
                    return
                except ApiError as error:
                    if error.status != 404:
                        raise
            await self.client.create("v1", "events", namespace, body)
            self.posted += 1
        except Exception:  # noqa: BLE001 - an event is a courtesy; the controller's work goes on without it
            log.warning("could not record event %s %s for %s/%s", type_, reason, namespace, involved.get("name"))

    def _allowed(self, obj: tuple, tick: float) -> bool:
        """The spam filter's token bucket per source and object."""
        tokens, last = self._tokens.get(obj, (float(SPAM_BURST), tick))
        tokens = min(float(SPAM_BURST), tokens + (tick - last) * SPAM_REFILL_PER_SECOND)
        allowed = tokens >= 1.0
        self._tokens.remember(obj, (tokens - 1.0 if allowed else tokens, tick))
        return allowed

    def _name(self, object_name: str) -> str:
        # Upstream: "<object name>.<event time in Unix nanoseconds, hex>"; kept unique within this recorder.
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return f"{object_name}.{self._last_ns:x}"
