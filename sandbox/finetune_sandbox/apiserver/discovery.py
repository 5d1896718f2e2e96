"""Discovery and health: /version, /healthz, /api, /apis, the group and group-version documents, OpenAPI."""

from __future__ import annotations

from aiohttp import web

from . import openapi
from .errors import ApiError
from .resources import Registry
from .wire import JSON, json_response

NOT_FOUND = "the server could not find the requested resource"


class Discovery:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

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
            raise ApiError(404, NOT_FOUND)
        return json_response(doc)

    async def core_discovery(self, request: web.Request) -> web.Response:
        _only_get(request)
        version = request.match_info["version"]
        if not self.registry.has_group_version("", version):
            raise ApiError(404, NOT_FOUND)
        return json_response(self.registry.resource_list("", version))

    async def group_discovery(self, request: web.Request) -> web.Response:
        _only_get(request)
        group = request.match_info["group"]
        if group not in self.registry.groups():
            raise ApiError(404, NOT_FOUND)
        return json_response(self.registry.api_group(group))

    async def gv_discovery(self, request: web.Request) -> web.Response:
        _only_get(request)
        group, version = request.match_info["group"], request.match_info["version"]
        if not self.registry.has_group_version(group, version):
            raise ApiError(404, NOT_FOUND)
        return json_response(self.registry.resource_list(group, version))


def _only_get(request: web.Request) -> None:
    if request.method != "GET":
        raise ApiError(405, "the server does not allow this method on the requested resource")
