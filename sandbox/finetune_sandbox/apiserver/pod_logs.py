"""pods/log: a container's output from the file the kubelet registered, with tailLines, limitBytes and follow."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from .errors import ApiError
from .objects import Objects
from .resources import ResourceType
from .store import Store
from .wire import flag

LogPaths = dict[tuple[str, str, str], str]


class PodLogs:
    def __init__(self, store: Store, objects: Objects, log_paths: LogPaths, stopping: asyncio.Event) -> None:
        self.store = store
        self.objects = objects
        self.log_paths = log_paths  # (namespace, pod, container) -> file, filled in by the kubelet
        self.stopping = stopping  # set when the server stops: every follow ends

    async def serve(
        self, request: web.Request, rt: ResourceType, namespace: str | None, name: str | None
    ) -> web.StreamResponse:
        pod = self.objects.require(rt, namespace, name or "")
        container = _container(request, pod, name)
        path = self.log_paths.get((namespace or "", name or "", container))
        if path is None or not os.path.exists(path):
            raise ApiError(400, f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
        with open(path, "rb") as f:
            data = f.read()
        offset = len(data)
        data = _cut(data, request.query.get("tailLines"), request.query.get("limitBytes"))
        if not flag(request, "follow"):
            return web.Response(body=data, content_type="text/plain")
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if data:
                await response.write(data)
            await self._follow(response, path, offset, namespace or "", name or "", container)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        try:
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    async def _follow(
        self, response: web.StreamResponse, path: str, offset: int, namespace: str, name: str, container: str
    ) -> None:
        """Write what the container adds from `offset` on, until it has ended (or the server stops)."""
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
            if self._container_done(namespace, name, container):
                finished_checks += 1
                if finished_checks >= 2:  # one more read after termination catches the last lines
                    break

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


def _container(request: web.Request, pod: dict, name: str | None) -> str:
    """The container asked for, or the pod's default (its annotation, or its only container)."""
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
    return container


def _cut(data: bytes, tail_lines: str | None, limit_bytes: str | None) -> bytes:
    """tailLines, then limitBytes."""
    if tail_lines is not None:
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-int(tail_lines) :]) if int(tail_lines) > 0 else b""
    if limit_bytes:
        data = data[: int(limit_bytes)]
    return data
