"""The operator's HTTP endpoints: progress reports in (POST, over TLS unless disabled: tls.py), Prometheus
metrics out (GET /metrics).

Hostile input is expected here (anything in the cluster can reach the port): bodies are size-capped
before they are read, tokens compared in constant time, reports schema-checked, each job
rate-limited, and no input makes it answer 5xx.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .hub import ProgressHub
from .report import MAX_REPORT_BYTES, InvalidReport, parse_report
from .tls import ProgressTls

log = logging.getLogger(__name__)

ROUTE = "/progress/v1/namespaces/{namespace}/finetunejobs/{name}"
# A trainer sends one report per ~10 s plus bursts at evaluation/checkpoint time.
RATE_PER_SECOND = 5.0
BURST = 10.0
MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key; `allow` is O(1) and never blocks."""

    def __init__(self, rate: float = RATE_PER_SECOND, burst: float = BURST, clock=time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def allow(self, key: tuple[str, str]) -> bool:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()  # bounded memory even under a flood of made-up job names
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def forget(self, key: tuple[str, str]) -> None:
        self._buckets.pop(key, None)


def _answer(status: int, reason: str, message: str = "") -> web.Response:
    if status == 204:
        return web.Response(status=204)
    return web.json_response({"reason": reason, "message": message or reason}, status=status)


def progress_app(hub: ProgressHub, limiter: RateLimiter | None = None) -> web.Application:
    limiter = limiter or RateLimiter()

    async def receive(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]

        def rejected(status: int, reason: str, message: str = "") -> web.Response:
            hub.metrics.reports.labels("rejected", reason).inc()
            return _answer(status, reason, message)

        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return rejected(401, "MissingToken", "send Authorization: Bearer <token from FINETUNE_PROGRESS_TOKEN_FILE>")
        if not limiter.allow((namespace, name)):
            return rejected(429, "RateLimited", f"at most {RATE_PER_SECOND:g} reports per second per job")
        if (request.content_length or 0) > MAX_REPORT_BYTES:
            return rejected(413, "TooLarge", f"at most {MAX_REPORT_BYTES} bytes")
        body = await request.content.read(MAX_REPORT_BYTES + 1)
        if len(body) > MAX_REPORT_BYTES:
            return rejected(413, "TooLarge", f"at most {MAX_REPORT_BYTES} bytes")
        try:
            report = parse_report(body)
        except InvalidReport as exc:
            return rejected(400, "InvalidReport", str(exc))
        status, reason = hub.accept(namespace, name, auth[7:].strip(), report)
        if status != 204:
            return rejected(status, reason)
        hub.metrics.reports.labels("accepted", "").inc()
        return _answer(204, reason)

    app = web.Application(client_max_size=MAX_REPORT_BYTES + 1)
    app.router.add_post(ROUTE, receive)
    return app


def metrics_app(hub: ProgressHub) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(hub.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


class Servers:
    """The progress and metrics listeners, started on the operator's own event loop.

    With `tls`, progress is served over HTTPS from its SSLContext (whose certificate tls.py renews in place) and
    its background check runs while the servers do; metrics stay plain HTTP for Prometheus.
    """

    def __init__(
        self,
        hub: ProgressHub,
        *,
        progress_port: int,
        metrics_port: int,
        host: str = "0.0.0.0",
        tls: ProgressTls | None = None,
    ) -> None:
        self._apps = [
            ("progress", progress_app(hub), progress_port, tls.ssl_context if tls else None),
            ("metrics", metrics_app(hub), metrics_port, None),
        ]
        self._host = host
        self._tls = tls
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        for what, app, port, ssl_context in self._apps:
            if port <= 0:
                continue
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, self._host, port, ssl_context=ssl_context).start()
            self._runners.append(runner)
            log.info("serving %s on %s:%d (%s)", what, self._host, port, "https" if ssl_context else "http")
        if self._tls is not None:
            self._tls.run_in_background()

    async def stop(self) -> None:
        if self._tls is not None:
            await self._tls.stop()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
