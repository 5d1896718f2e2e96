"""What the server sent to each client: objects in list answers and watch events, by client and resource.

The real API server counts watch events per resource (`apiserver_watch_events_total`); the sandbox also
keys them by the client, named by the first product of its User-Agent ("kopf/1.45.2" -> "kopf"), so a
test or benchmark can say what reached the operator's watches and what a server-side selector kept
away. Bookmarks carry no object and are not counted.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from aiohttp import web

# (client, group, plural, "list" or "watch", namespace: "" for cluster-scoped objects)
DeliveryKey = tuple[str, str, str, str, str]


def client_name(request: web.Request) -> str:
    agent = request.headers.get("User-Agent", "").strip()
    return agent.split()[0].split("/")[0] if agent else "unknown"


@dataclass
class Deliveries:
    objects: collections.Counter[DeliveryKey] = field(default_factory=collections.Counter)
    bytes: collections.Counter[DeliveryKey] = field(default_factory=collections.Counter)
    # Watches refused with 410 Expired, by (client, group, plural): each makes the client list everything again.
    expired: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)

    def add(self, request: web.Request, group: str, plural: str, how: str, namespaces: list[str], size: int) -> None:
        """One answer or watch write: the namespace of each object in it, and its size in bytes."""
        client = client_name(request)
        for namespace in namespaces:
            self.objects[(client, group, plural, how, namespace)] += 1
        if namespaces:
            self.bytes[(client, group, plural, how, namespaces[0])] += size

    def received(self, client: str, group: str, plural: str, namespaces: set[str] | None = None) -> int:
        """Objects `client` has been sent of one resource (in `namespaces`, else anywhere), lists and watches."""
        return sum(
            n
            for (c, g, p, _, ns), n in self.objects.items()
            if (c, g, p) == (client, group, plural) and (namespaces is None or ns in namespaces)
        )

    def refused_expired(self, request: web.Request, group: str, plural: str) -> None:
        self.expired[(client_name(request), group, plural)] += 1

    def clear(self) -> None:
        self.objects.clear()
        self.bytes.clear()
        self.expired.clear()
