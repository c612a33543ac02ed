"""HTTP metrics by route template, `GET /metrics`, and what FastAPI's own OpenTelemetry
support is asked to record. (Request ids are api.middleware.RequestContext's job.)"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI, Response
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durable_orchestrator.telemetry import metrics

# Not traced (probes and scrapes would drown the real traffic).
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED


# One server span per request, named by its route, in the trace the workflow and activities
# continue. FastAPI's metrics and logs stay off (Prometheus metrics come from HttpMetrics, logs
# from structlog), and so do its spans per dependency and per serialisation: detail that cost
# API CPU on every request and that nobody reads.
TELEMETRY: TelemetryConfig = {
    "tracing": True, "metrics": False, "logs": False, "operation_spans": False, "exclude": _untraced,
}


class HttpMetrics:
    """Counts and times every request under its route template (`/tasks/{task_id}`), never the
    raw path, so label values stay bounded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        code = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            metrics.HTTP_REQUESTS.labels(template, method, str(code)).inc()
            metrics.HTTP_DURATION.labels(template, method).observe(time.perf_counter() - started)


def install_observability(app: FastAPI) -> None:
    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render_latest()
        return Response(body, media_type=content_type)

    app.add_middleware(HttpMetrics)
