"""Lists: selectors, the exact-name shortcut, sorting, `limit`/`continue` pages, and Tables for kubectl."""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from . import selectors
from .delivery import Deliveries
from .errors import ApiError
from .objects import Objects
from .resources import ResourceType
from .store import Store
from .tables import build_table
from .wire import json_response, wants_table


def request_matcher(request: web.Request):
    """The request's label and field selectors as one predicate (None: everything matches)."""
    return selectors.combine(
        selectors.parse_label_selector(request.query.get("labelSelector")),
        selectors.parse_field_selector(request.query.get("fieldSelector")),
    )


def list_response(
    request: web.Request,
    store: Store,
    objects: Objects,
    rt: ResourceType,
    namespace: str | None,
    deliveries: Deliveries | None = None,
) -> web.Response:
    matcher = request_matcher(request)
    items = [
        objects.present(rt, obj)
        for obj in _candidates(request, store, rt, namespace)
        if matcher is None or matcher(obj)
    ]
    items.sort(key=_sort_key)
    rv = str(store.resource_version)
    list_meta: dict[str, Any] = {"resourceVersion": rv}
    items = _paginate(items, request, list_meta)
    if wants_table(request):
        table = build_table(rt, items, rv, request.query.get("includeObject", "Metadata"))
        table["metadata"] = list_meta
        response = json_response(table)
    else:
        response = json_response(
            {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": list_meta, "items": items}
        )
    if deliveries is not None:
        namespaces = [obj["metadata"].get("namespace", "") for obj in items]
        deliveries.add(request, rt.group, rt.plural, "list", namespaces, len(response.body or b""))
    return response


def _candidates(request: web.Request, store: Store, rt: ResourceType, namespace: str | None) -> list[dict[str, Any]]:
    """The objects to filter: all of the namespace (or cluster), or just one for `metadata.name=` selectors."""
    name = selectors.exact_name(request.query.get("fieldSelector"))
    if name is None:
        return store.list(rt.group, rt.plural, namespace)
    one = store.get(rt.group, rt.plural, namespace or "", name) if (namespace or not rt.namespaced) else None
    if one is not None:
        return [one]
    return [] if (namespace or not rt.namespaced) else store.list(rt.group, rt.plural, None)


def _sort_key(obj: dict[str, Any]) -> tuple[str, str]:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def _paginate(items: list[dict[str, Any]], request: web.Request, list_meta: dict[str, Any]) -> list[dict[str, Any]]:
    """`limit`/`continue` over the current state (a real server pages one snapshot; this pages live data)."""
    token = request.query.get("continue")
    if token:
        try:
            after = tuple(json.loads(base64.urlsafe_b64decode(token.encode())))
        except (ValueError, TypeError) as exc:
            raise ApiError(400, f"invalid continue token: {exc}") from exc
        items = [obj for obj in items if _sort_key(obj) > after]
    limit = int(request.query.get("limit") or 0)
    if limit > 0 and len(items) > limit:
        list_meta["continue"] = base64.urlsafe_b64encode(json.dumps(_sort_key(items[limit - 1])).encode()).decode()
        list_meta["remainingItemCount"] = len(items) - limit
        items = items[:limit]
    return items
