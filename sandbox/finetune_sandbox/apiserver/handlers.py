"""HTTP handlers: the routes, and Kubernetes REST paths mapped onto the object semantics.

A resource request is parsed into a `Target` (the kind, namespace, name, subresource, watch or not), then
served by what it names: one object, a collection, a pod's log or binding or eviction, or a watch.
Discovery, lists, watches and logs have a module each (discovery.py, listing.py, watches.py, pod_logs.py);
wire.py holds what every handler shares (JSON responses, request bodies, the errors middleware).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .delivery import Deliveries
from .discovery import NOT_FOUND, Discovery
from .errors import ApiError
from .listing import list_response, request_matcher
from .objects import Objects
from .pod_logs import LogPaths, PodLogs
from .resources import Registry, ResourceType
from .store import Store
from .tables import build_table
from .watches import Watches
from .wire import flag, json_response, read_body, wants_table

NOT_ALLOWED = "the server does not allow this method on the requested resource"


@dataclass(frozen=True)
class Target:
    """What a resource path names: `rt` in `namespace`; one object if `name`; a subresource of it."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch: bool


class Handlers:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        objects: Objects,
        bookmark_interval: float,
        log_paths: LogPaths,
        max_watch_seconds: float = 1800.0,
        deliveries: Deliveries | None = None,
    ) -> None:
        self.store = store
        # What each client was sent (list items, watch events): tests and benchmarks read it.
        self.deliveries = deliveries or Deliveries()
        self.registry = registry
        self.objects = objects
        self.stopping = asyncio.Event()  # set when the server stops: watches and log follows end
        self.discovery = Discovery(registry)
        self.watches = Watches(store, objects, bookmark_interval, max_watch_seconds, self.stopping, self.deliveries)
        self.logs = PodLogs(store, objects, log_paths, self.stopping)

    def routes(self) -> list[web.RouteDef]:
        discovery = self.discovery
        return [
            web.get("/version", discovery.version),
            web.get("/version/", discovery.version),
            web.get("/healthz", discovery.ok),
            web.get("/readyz", discovery.ok),
            web.get("/livez", discovery.ok),
            web.get("/api", discovery.api),
            web.get("/api/", discovery.api),
            web.get("/apis", discovery.apis),
            web.get("/apis/", discovery.apis),
            web.get("/openapi/v2", discovery.openapi_v2),
            web.get("/openapi/v3", discovery.openapi_v3),
            web.get("/openapi/v3/{path:.*}", discovery.openapi_v3_gv),
            web.route("*", "/api/{version}", discovery.core_discovery),
            web.route("*", "/api/{version}/{tail:.*}", self.core_resource),
            web.route("*", "/apis/{group}", discovery.group_discovery),
            web.route("*", "/apis/{group}/{version}", discovery.gv_discovery),
            web.route("*", "/apis/{group}/{version}/{tail:.*}", self.group_resource),
        ]

    # --- resources ----------------------------------------------------------------------------

    async def core_resource(self, request: web.Request) -> web.StreamResponse:
        return await self._resource(request, "", request.match_info["version"], request.match_info["tail"])

    async def group_resource(self, request: web.Request) -> web.StreamResponse:
        return await self._resource(
            request, request.match_info["group"], request.match_info["version"], request.match_info["tail"]
        )

    async def _resource(self, request: web.Request, group: str, version: str, tail: str) -> web.StreamResponse:
        target = self._target(request, group, version, tail)
        if target.subresource == "log":
            if request.method != "GET":
                raise ApiError(405, "only GET is allowed on pods/log")
            return await self.logs.serve(request, target.rt, target.namespace, target.name)
        if target.subresource in ("binding", "eviction"):
            return await self._pod_action(request, target)
        if target.name is None:
            return await self._collection(request, target)
        if target.watch:
            return await self.watches.serve(request, target.rt, target.namespace, target.name)
        return await self._object(request, target)

    def _target(self, request: web.Request, group: str, version: str, tail: str) -> Target:
        """Parse `[watch/][namespaces/NS/]PLURAL[/NAME[/SUBRESOURCE]]`; 404 for what the server does not serve."""
        parts = [p for p in tail.split("/") if p]
        watch = flag(request, "watch")
        if parts and parts[0] == "watch":
            watch, parts = True, parts[1:]
        namespace = None
        namespace_subresource = len(parts) == 3 and parts[2] in ("status", "finalize")
        if len(parts) >= 3 and parts[0] == "namespaces" and not namespace_subresource:
            namespace, parts = parts[1], parts[2:]
        if not parts or len(parts) > 3:
            raise ApiError(404, NOT_FOUND)
        plural, name = parts[0], (parts[1] if len(parts) > 1 else None)
        subresource = parts[2] if len(parts) > 2 else None
        rt = self.registry.get(group, version, plural)
        if rt is None:
            raise ApiError(404, NOT_FOUND)
        if subresource == "finalize" and rt.key == ("", "namespaces"):
            subresource = None
        if subresource is not None and subresource not in rt.subresources:
            raise ApiError(404, NOT_FOUND)
        if namespace is not None and not rt.namespaced:
            raise ApiError(404, NOT_FOUND)
        return Target(rt, namespace, name, subresource, watch)

    async def _pod_action(self, request: web.Request, target: Target) -> web.Response:
        """pods/binding (the scheduler's) and pods/eviction (a delete with the eviction's options)."""
        if request.method != "POST":
            raise ApiError(405, f"only POST is allowed on pods/{target.subresource}")
        body = await read_body(request)
        rt, namespace, name = target.rt, target.namespace, target.name or ""
        if target.subresource == "binding":
            return json_response(self.objects.bind(rt, namespace, name, body), 201)
        options = self._delete_options(request, (body or {}).get("deleteOptions") or {})
        self.objects.delete(rt, namespace, name, options, _dry_run(request))
        return json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201
        )

    async def _collection(self, request: web.Request, target: Target) -> web.StreamResponse:
        """GET (list or watch), POST (create) and DELETE (deletecollection) on a resource."""
        rt, namespace, method = target.rt, target.namespace, request.method
        if method == "GET":
            if target.watch:
                return await self.watches.serve(request, rt, namespace)
            return list_response(request, self.store, self.objects, rt, namespace, self.deliveries)
        if method == "POST":
            body = await read_body(request)
            created = self.objects.create(rt, namespace, body, _dry_run(request), request.query.get("fieldValidation"))
            return self._respond(created, 201)
        if method == "DELETE":
            matcher = request_matcher(request)
            options = self._delete_options(request, await read_body(request, optional=True) or {})
            items = self.objects.delete_collection(rt, namespace, matcher, options, _dry_run(request))
            meta = {"resourceVersion": str(self.store.resource_version)}
            return self._respond({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": items})
        raise ApiError(405, NOT_ALLOWED)

    async def _object(self, request: web.Request, target: Target) -> web.Response:
        """GET, PUT, PATCH and DELETE on one object (or PUT/PATCH on its status)."""
        rt, namespace, name, subresource = target.rt, target.namespace, target.name or "", target.subresource
        dry_run, field_validation = _dry_run(request), request.query.get("fieldValidation")
        method = request.method
        if method == "GET":
            obj = self.objects.present(rt, self.objects.require(rt, namespace, name))
            if wants_table(request) and subresource is None:
                rv = obj["metadata"].get("resourceVersion")
                return json_response(build_table(rt, [obj], rv, request.query.get("includeObject", "Metadata")))
            return self._respond(obj)
        if method == "PUT":
            body = await read_body(request)
            obj, _ = self.objects.update(rt, namespace, name, body, subresource, dry_run, field_validation)
            return self._respond(obj)
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "")
            patch = await read_body(request)
            obj, _ = self.objects.patch(
                rt, namespace, name, content_type, patch, subresource, dry_run, field_validation
            )
            return self._respond(obj)
        if method == "DELETE":
            if subresource:
                raise ApiError(405, "DELETE is not allowed on a subresource")
            options = self._delete_options(request, await read_body(request, optional=True) or {})
            obj, removed = self.objects.delete(rt, namespace, name, options, dry_run)
            return self._respond(obj, 200 if removed else 202)
        raise ApiError(405, NOT_ALLOWED)

    def _respond(self, body: Any, status: int = 200) -> web.Response:
        """The answer, with the warnings the write left (as `Warning: 299` headers, like the real server)."""
        headers = {}
        if self.objects.warnings:
            headers["Warning"] = ", ".join(f'299 - "{w}"' for w in self.objects.warnings)
            self.objects.warnings.clear()
        return json_response(body, status, headers)

    @staticmethod
    def _delete_options(request: web.Request, options: dict[str, Any]) -> dict[str, Any]:
        options = dict(options) if isinstance(options, dict) else {}
        if "gracePeriodSeconds" in request.query:
            options["gracePeriodSeconds"] = int(request.query["gracePeriodSeconds"])
        if "propagationPolicy" in request.query:
            options["propagationPolicy"] = request.query["propagationPolicy"]
        if "orphanDependents" in request.query:
            options["orphanDependents"] = flag(request, "orphanDependents")
        if options.get("gracePeriodSeconds") is not None:
            options["gracePeriodSeconds"] = int(options["gracePeriodSeconds"])
        return options


def _dry_run(request: web.Request) -> bool:
    return request.query.get("dryRun") == "All"
