"""Events about pods, posted as the kubelet's event recorder does (client-go tools/record).

A repeat of the same event (same source, object, type, reason and message) is not a new Event: the recorder's
correlator keeps the first one's name and PATCHes its `count` and `lastTimestamp`, which `kubectl describe`
shows as "(x6 over 12m)". What the correlator also does and the sandbox does not: merge more than 10 similar
events with different messages into one "(combined from similar events)", and drop events past a burst of 25
per object (one more token every 5 minutes).
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
# client-go's correlator remembers this many events (an LRU cache).
MAX_REMEMBERED = 4096

EventKey = tuple[str, ...]


def involved_pod(pod: dict, field_path: str = "") -> dict:
    """The ObjectReference to a pod (and, with `field_path`, one of its containers: spec.containers{NAME})."""
    meta = pod.get("metadata") or {}
    reference = {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": meta.get("namespace", "default"),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
    }
    if meta.get("resourceVersion"):
        reference["resourceVersion"] = meta["resourceVersion"]
    if field_path:
        reference["fieldPath"] = field_path
    return reference


def container_field_path(container: str, *, init: bool = False) -> str:
    return f"spec.{'initContainers' if init else 'containers'}{{{container}}}"


def event_body(
    name: str, involved: dict, type_: str, reason: str, message: str, *, host: str, now: dt.datetime
) -> dict:
    """A core/v1 Event as the kubelet posts it: count 1, first and last timestamps now."""
    stamp = format_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": involved["namespace"]},
        "involvedObject": involved,
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": host},
        "reportingComponent": "kubelet",
        "reportingInstance": host,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def aggregation_key(body: dict) -> EventKey:
    """What makes two events the same event (client-go's getEventKey): resourceVersion is not part of it."""
    involved = body["involvedObject"]
    source = body.get("source") or {}
    return (
        source.get("component", ""),
        source.get("host", ""),
        involved.get("kind", ""),
        involved.get("namespace", ""),
        involved.get("name", ""),
        involved.get("fieldPath", ""),
        involved.get("uid", ""),
        involved.get("apiVersion", ""),
        body.get("type", ""),
        body.get("reason", ""),
        body.get("message", ""),
    )


class EventRecorder:
    """Posts the kubelet's events, one Event per distinct event with a growing count. Best effort, as upstream:
    a failure to record is logged and never stops the pod."""

    def __init__(self, client: SandboxClient, host: str, now: Callable[[], dt.datetime]) -> None:
        self.client = client
        self.host = host
        self.now = now
        # aggregation key -> (namespace, Event name, count so far)
        self._recorded: collections.OrderedDict[EventKey, tuple[str, str, int]] = collections.OrderedDict()
        self._last_ns = 0

    async def pod_event(self, pod: dict, type_: str, reason: str, message: str, *, field_path: str = "") -> None:
        await self.record(involved_pod(pod, field_path), type_, reason, message)

    async def record(self, involved: dict, type_: str, reason: str, message: str) -> None:
        now = self.now()
        body = event_body(self._name(involved["name"]), involved, type_, reason, message, host=self.host, now=now)
        key = aggregation_key(body)
        try:
            seen = self._recorded.get(key)
            if seen is not None:
                namespace, name, count = seen
                try:
                    await self.client.patch(
                        "v1",
                        "events",
                        namespace,
                        name,
                        {"count": count + 1, "lastTimestamp": format_time(now), "message": message},
                    )
                    self._remember(key, namespace, name, count + 1)
                    return
                except ApiError as error:
                    if error.status != 404:
                        raise
                    # The Event is gone (deleted, or its TTL ran out): record it anew.
            created = await self.client.create("v1", "events", involved["namespace"], body)
            self._remember(key, involved["namespace"], created["metadata"]["name"], 1)
        except Exception:  # noqa: BLE001 - an event is a courtesy; the pod's work goes on without it
            log.warning(
                "could not record event %s %s for %s/%s", type_, reason, involved["namespace"], involved["name"]
            )

    def _remember(self, key: EventKey, namespace: str, name: str, count: int) -> None:
        self._recorded[key] = (namespace, name, count)
        self._recorded.move_to_end(key)
        while len(self._recorded) > MAX_REMEMBERED:
            self._recorded.popitem(last=False)

    def _name(self, object_name: str) -> str:
        # Upstream: "<object name>.<event time in Unix nanoseconds, hex>"; kept unique within this recorder.
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return f"{object_name}.{self._last_ns:x}"
