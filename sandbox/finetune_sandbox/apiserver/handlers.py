"""HTTP handlers: map Kubernetes REST paths onto the object semantics and stream watches and logs."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from typing import Any

import yaml
from aiohttp import web

from . import openapi, protobuf, selectors
from .errors import ApiError, status_object
from .objects import Objects
from .resources import Registry, ResourceType
from .store import Store
from .tables import build_table

logger = logging.getLogger(__name__)
JSON = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), status=status, content_type=JSON, headers=headers
    )


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


class Handlers:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        objects: Objects,
        bookmark_interval: float,
        log_paths: dict[tuple[str, str, str], str],
        max_watch_seconds: float = 1800.0,
    ) -> None:
        self.store = store
        self.registry = registry
        self.objects = objects
        self.bookmark_interval = bookmark_interval
        self.log_paths = log_paths
        self.max_watch_seconds = max_watch_seconds
        self.stopping = asyncio.Event()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/version", self.version),
            web.get("/version/", self.version),
            web.get("/healthz", self.ok),
            web.get("/readyz", self.ok),
            web.get("/livez", self.ok),
            web.get("/api", self.api),
            web.get("/api/", self.api),
            web.get("/apis", self.apis),
            web.get("/apis/", self.apis),
            web.get("/openapi/v2", self.openapi_v2),
            web.get("/openapi/v3", self.openapi_v3),
            web.get("/openapi/v3/{path:.*}", self.openapi_v3_gv),
            web.route("*", "/api/{version}", self.core_discovery),
            web.route("*", "/api/{version}/{tail:.*}", self.core_resource),
            web.route("*", "/apis/{group}", self.group_discovery),
            web.route("*", "/apis/{group}/{version}", self.gv_discovery),
            web.route("*", "/apis/{group}/{version}/{tail:.*}", self.group_resource),
        ]

    # --- discovery ----------------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "major": "1",
                "minor": "37",
                "gitVersion": f"{openapi.VERSION}-sandbox",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.25",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def api(self, request: web.Request) -> web.Response:
        return json_response(self.registry.api_versions())

    async def apis(self, request: web.Request) -> web.Response:
        return json_response(self.registry.api_group_list())

    async def openapi_v2(self, request: web.Request) -> web.Response:
        if "protobuf" in request.headers.get("Accept", "") and JSON not in request.headers.get("Accept", ""):
            raise ApiError(406, "only application/json is served for /openapi/v2")
        return json_response(openapi.v2(self.registry))

    async def openapi_v3(self, request: web.Request) -> web.Response:
        return json_response(openapi.v3_root(self.registry))

    async def openapi_v3_gv(self, request: web.Request) -> web.Response:
        parts = request.match_info["path"].strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            doc = openapi.v3_group_version(self.registry, "", parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            doc = openapi.v3_group_version(self.registry, parts[1], parts[2])
        else:
            doc = None
        if doc is None:
            raise ApiError(404, "the server could not find the requested resource")
        return json_response(doc)

    async def core_discovery(self, request: web.Request) -> web.Response:
        self._only_get(request)
        version = request.match_info["version"]
        if not self.registry.has_group_version("", version):
            raise ApiError(404, "the server could not find the requested resource")
        return json_response(self.registry.resource_list("", version))

    async def group_discovery(self, request: web.Request) -> web.Response:
        self._only_get(request)
        group = request.match_info["group"]
        if group not in self.registry.groups():
            raise ApiError(404, "the server could not find the requested resource")
        return json_response(self.registry.api_group(group))

    async def gv_discovery(self, request: web.Request) -> web.Response:
        self._only_get(request)
        group, version = request.match_info["group"], request.match_info["version"]
        if not self.registry.has_group_version(group, version):
            raise ApiError(404, "the server could not find the requested resource")
        return json_response(self.registry.resource_list(group, version))

    @staticmethod
    def _only_get(request: web.Request) -> None:
        if request.method != "GET":
            raise ApiError(405, "the server does not allow this method on the requested resource")

    # --- resources ----------------------------------------------------------------------------

    async def core_resource(self, request: web.Request) -> web.StreamResponse:
        return await self._resource(request, "", request.match_info["version"], request.match_info["tail"])

    async def group_resource(self, request: web.Request) -> web.StreamResponse:
        return await self._resource(
            request, request.match_info["group"], request.match_info["version"], request.match_info["tail"]
        )

    async def _resource(self, request: web.Request, group: str, version: str, tail: str) -> web.StreamResponse:
        parts = [p for p in tail.split("/") if p]
        watch = _flag(request, "watch")
        if parts and parts[0] == "watch":
            watch, parts = True, parts[1:]
        namespace = None
        namespace_subresource = len(parts) == 3 and parts[2] in ("status", "finalize")
        if len(parts) >= 3 and parts[0] == "namespaces" and not namespace_subresource:
            namespace, parts = parts[1], parts[2:]
        if not parts or len(parts) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        plural, name = parts[0], (parts[1] if len(parts) > 1 else None)
        subresource = parts[2] if len(parts) > 2 else None
        rt = self.registry.get(group, version, plural)
        if rt is None:
            raise ApiError(404, "the server could not find the requested resource")
        if subresource == "finalize" and rt.key == ("", "namespaces"):
            subresource = None
        if subresource is not None and subresource not in rt.subresources:
            raise ApiError(404, "the server could not find the requested resource")
        if namespace is not None and not rt.namespaced:
            raise ApiError(404, "the server could not find the requested resource")
        method = request.method
        dry_run = request.query.get("dryRun") == "All"
        field_validation = request.query.get("fieldValidation")
        if subresource == "log":
            if method != "GET":
                raise ApiError(405, "only GET is allowed on pods/log")
            return await self._log(request, rt, namespace, name)
        if subresource in ("binding", "eviction"):
            if method != "POST":
                raise ApiError(405, f"only POST is allowed on pods/{subresource}")
            body = await self._body(request)
            if subresource == "binding":
                return json_response(self.objects.bind(rt, namespace, name or "", body), 201)
            self.objects.delete(
                rt,
                namespace,
                name or "",
                self._delete_options(request, (body or {}).get("deleteOptions") or {}),
                dry_run,
            )
            return json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201
            )
        if name is None:
            if method == "GET":
                return await (self._watch(request, rt, namespace) if watch else self._list(request, rt, namespace))
            if method == "POST":
                body = await self._body(request)
                return self._respond(
                    request, rt, self.objects.create(rt, namespace, body, dry_run, field_validation), 201
                )
            if method == "DELETE":
                matcher = selectors.combine(
                    selectors.parse_label_selector(request.query.get("labelSelector")),
                    selectors.parse_field_selector(request.query.get("fieldSelector")),
                )
                options = await self._body(request, optional=True) or {}
                options = self._delete_options(request, options)
                items = self.objects.delete_collection(rt, namespace, matcher, options, dry_run)
                return self._respond(
                    request,
                    rt,
                    {
                        "kind": rt.list_kind,
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(self.store.resource_version)},
                        "items": items,
                    },
                )
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if watch:
            return await self._watch(request, rt, namespace, name)
        if method == "GET":
            obj = self.objects.present(rt, self.objects.require(rt, namespace, name))
            if _wants_table(request) and subresource is None:
                return json_response(
                    build_table(
                        rt,
                        [obj],
                        obj["metadata"].get("resourceVersion"),
                        request.query.get("includeObject", "Metadata"),
                    )
                )
            return self._respond(request, rt, obj)
        if method == "PUT":
            obj, _ = self.objects.update(
                rt, namespace, name, await self._body(request), subresource, dry_run, field_validation
            )
            return self._respond(request, rt, obj)
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "")
            patch = await self._body(request)
            obj, _ = self.objects.patch(
                rt, namespace, name, content_type, patch, subresource, dry_run, field_validation
            )
            return self._respond(request, rt, obj)
        if method == "DELETE":
            if subresource:
                raise ApiError(405, "DELETE is not allowed on a subresource")
            options = self._delete_options(request, await self._body(request, optional=True) or {})
            obj, removed = self.objects.delete(rt, namespace, name, options, dry_run)
            return self._respond(request, rt, obj, 200 if removed else 202)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    def _respond(self, request: web.Request, rt: ResourceType, body: Any, status: int = 200) -> web.Response:
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
            options["orphanDependents"] = _flag(request, "orphanDependents")
        if options.get("gracePeriodSeconds") is not None:
            options["gracePeriodSeconds"] = int(options["gracePeriodSeconds"])
        return options

    @staticmethod
    async def _body(request: web.Request, optional: bool = False) -> Any:
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

    # --- list & watch ---------------------------------------------------------------------------

    def _matcher(self, request: web.Request):
        return selectors.combine(
            selectors.parse_label_selector(request.query.get("labelSelector")),
            selectors.parse_field_selector(request.query.get("fieldSelector")),
        )

    async def _list(self, request: web.Request, rt: ResourceType, namespace: str | None) -> web.Response:
        matcher = self._matcher(request)
        name = selectors.exact_name(request.query.get("fieldSelector"))
        if name is not None:
            one = (
                self.store.get(rt.group, rt.plural, namespace or "", name) if (namespace or not rt.namespaced) else None
            )
            candidates = (
                [one]
                if one is not None
                else ([] if (namespace or not rt.namespaced) else self.store.list(rt.group, rt.plural, None))
            )
        else:
            candidates = self.store.list(rt.group, rt.plural, namespace)
        items = [self.objects.present(rt, obj) for obj in candidates if matcher is None or matcher(obj)]
        items.sort(key=_sort_key)
        rv = str(self.store.resource_version)
        list_meta: dict[str, Any] = {"resourceVersion": rv}
        items = _paginate(items, request, list_meta)
        if _wants_table(request):
            table = build_table(rt, items, rv, request.query.get("includeObject", "Metadata"))
            table["metadata"] = list_meta
            return json_response(table)
        return json_response(
            {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": list_meta, "items": items}
        )

    async def _watch(
        self, request: web.Request, rt: ResourceType, namespace: str | None, name: str | None = None
    ) -> web.StreamResponse:
        matcher = self._matcher(request)
        if name is not None:
            matcher = selectors.combine(matcher, lambda obj, n=name: obj["metadata"]["name"] == n)
        rv_text = request.query.get("resourceVersion", "")
        initial = _flag(request, "sendInitialEvents")
        since = None if (initial or rv_text in ("", "0")) else _parse_rv(rv_text)
        timeout = min(float(request.query.get("timeoutSeconds") or self.max_watch_seconds), self.max_watch_seconds)
        bookmarks = _flag(request, "allowWatchBookmarks")
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        try:
            watcher, backlog = self.store.watch(
                rt.group, rt.plural, namespace if rt.namespaced else None, matcher, since
            )
        except ApiError as exc:
            await response.prepare(request)
            await response.write(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
            await response.write_eof()
            return response
        deadline = time.monotonic() + timeout
        table = _wants_table(request)
        include_object = request.query.get("includeObject", "Metadata")

        def encode(type_: str, item: Any) -> bytes:
            """One watch line; `kubectl get -w` asks for each object as a one-row Table."""
            if table:
                obj = item if isinstance(item, dict) else item.obj
                obj = self.objects.present(rt, obj)
                row = build_table(rt, [obj], obj["metadata"].get("resourceVersion"), include_object)
                return json.dumps({"type": type_, "object": row}, separators=(",", ":")).encode() + b"\n"
            if isinstance(item, dict):
                return (
                    json.dumps(
                        {"type": type_, "object": self.objects.present(rt, item)}, separators=(",", ":")
                    ).encode()
                    + b"\n"
                )
            return item.line(rt.api_version, type_)

        try:
            await response.prepare(request)
            for type_, item in backlog:
                await response.write(encode(type_, item))
            if initial and bookmarks:
                await response.write(self._bookmark(rt, initial_end=True))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.stopping.is_set():
                    break
                wait = min(remaining, self.bookmark_interval) if bookmarks else remaining
                batch = await watcher.next_batch(wait)
                if batch:
                    await response.write(b"".join(encode(*item) for item in batch))
                elif watcher.closed:
                    break
                elif bookmarks and deadline - time.monotonic() > 0:
                    await response.write(self._bookmark(rt))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            watcher.close()
        try:
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response

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

    # --- pod logs -----------------------------------------------------------------------------

    async def _log(
        self, request: web.Request, rt: ResourceType, namespace: str | None, name: str | None
    ) -> web.StreamResponse:
        pod = self.objects.require(rt, namespace, name or "")
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = request.query.get("container")
        if not container:
            default = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
            if default or len(containers) == 1:
                container = default or containers[0]
            else:
                raise ApiError(
                    400, f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
                )
        if container not in containers:
            raise ApiError(400, f"container {container} is not valid for pod {name}")
        path = self.log_paths.get((namespace or "", name or "", container))
        if path is None or not os.path.exists(path):
            raise ApiError(400, f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
        tail = request.query.get("tailLines")
        limit = int(request.query["limitBytes"]) if request.query.get("limitBytes") else None
        with open(path, "rb") as f:
            data = f.read()
        offset = len(data)
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail) :]) if int(tail) > 0 else b""
        if limit is not None:
            data = data[:limit]
        if not _flag(request, "follow"):
            return web.Response(body=data, content_type="text/plain")
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if data:
                await response.write(data)
            finished_checks = 0
            while not self.stopping.is_set():
                await asyncio.sleep(0.1)
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                if chunk:
                    offset += len(chunk)
                    await response.write(chunk)
                    continue
                if self._container_done(namespace or "", name or "", container):
                    finished_checks += 1
                    if finished_checks >= 2:  # one more read after termination catches the last lines
                        break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        try:
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    def _container_done(self, namespace: str, name: str, container: str) -> bool:
        pod = self.store.get("", "pods", namespace, name)
        if pod is None:
            return True
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return True
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") == container and "terminated" in (cs.get("state") or {}):
                return True
        return False


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


def _parse_rv(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiError(
            400, f"invalid resourceVersion {text!r}: it must be a resourceVersion this server returned"
        ) from None


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
