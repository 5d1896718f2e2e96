"""`ApiServer`: the in-process Kubernetes API server the sandbox's operator, kubectl and tests talk to."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Callable

import yaml
from aiohttp import web

from .errors import ApiError
from .faults import Faults
from .gc import GarbageCollector
from .handlers import Handlers
from .history import UPPER_BOUND
from .objects import Objects
from .resources import Registry
from .store import Store
from .wire import errors_middleware, json_response

CONTEXT = "ftjob-sandbox"


class ApiServer:
    """Plain HTTP on `host`, no authentication; see the package docstring for the semantics served."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        graceful_pod_deletion: bool = True,
        history_size: int = UPPER_BOUND,
        bookmark_interval: float = 5.0,
        gc_interval: float = 1.0,
        namespaces: tuple[str, ...] = ("default", "kube-system"),
    ) -> None:
        self.host = host
        self.port = port
        self.store = Store(history_size=history_size)
        self.registry = Registry()
        self.objects = Objects(self.store, self.registry, graceful_pod_deletion=graceful_pod_deletion)
        self.faults = Faults()
        # Called with (method, path with query) for every request, before it is served (benchmarks count them).
        self.request_listeners: list[Callable[[str, str], None]] = []
        self.gc = GarbageCollector(self.objects, interval=gc_interval)
        self._log_paths: dict[tuple[str, str, str], str] = {}
        self.handlers = Handlers(self.store, self.registry, self.objects, bookmark_interval, self._log_paths)
        # Objects sent to each client by resource (list items and watch events): what a selector kept away.
        self.deliveries = self.handlers.deliveries
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        ns_type = self.registry.get("", "v1", "namespaces")
        for name in namespaces:
            self.objects.create(ns_type, None, {"metadata": {"name": name}})

    @property
    def graceful_pod_deletion(self) -> bool:
        return self.objects.graceful_pod_deletion

    async def start(self) -> str:
        app = web.Application(
            middlewares=[self._faults_middleware, errors_middleware], client_max_size=64 * 1024 * 1024
        )
        app.add_routes(self.handlers.routes())
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.gc.start()
        self.url = f"http://{self.host}:{self.port}"
        return self.url

    async def stop(self) -> None:
        self.handlers.stopping.set()
        self.store.close_watchers()
        await self.gc.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "ApiServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default") -> str:
        """Write a kubeconfig (context, cluster and user all named `ftjob-sandbox`) pointing at this server."""
        if self.url is None:
            raise RuntimeError("start() the server before writing its kubeconfig")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": CONTEXT, "cluster": {"server": self.url}}],
            "users": [{"name": CONTEXT, "user": {"token": "sandbox"}}],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}],
            "current-context": CONTEXT,
        }
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        return path

    def set_log_path(self, namespace: str, pod: str, container: str, path: str | os.PathLike[str]) -> None:
        """Where `pods/log` reads a container's output (the kubelet records this when it starts it)."""
        self._log_paths[(namespace, pod, container)] = os.fspath(path)

    @web.middleware
    async def _faults_middleware(self, request: web.Request, handler) -> web.StreamResponse:
        for listener in self.request_listeners:
            listener(request.method, request.path_qs)
        rule = self.faults.take(request.method, request.path_qs)
        if rule is None:
            return await handler(request)
        if rule.status == 0:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError()
        exc = ApiError(rule.status, rule.message)
        return json_response(exc.status(), rule.status)
