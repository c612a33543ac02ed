"""HTTP metrics by route template, request-id/trace-id log binding, `GET /metrics`, and the
OpenTelemetry FastAPI instrumentation."""

from __future__ import annotations

import time
import uuid

import structlog
from fastapi import FastAPI, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import metrics

REQUEST_ID_HEADER = b"x-request-id"
# Not traced (probes and scrapes would drown the real traffic).
UNTRACED = "healthz,readyz,metrics"


class HttpMetrics:
    """Counts and times every request under its route template (`/tasks/{task_id}`), never the
    raw path; binds `request_id` (from X-Request-ID or a new one) to the request's log lines."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(REQUEST_ID_HEADER, b"").decode("latin-1")[:128]
        request_id = incoming or uuid.uuid4().hex
        code = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
                if not any(k.lower() == REQUEST_ID_HEADER for k, _ in message.get("headers", [])):
                    message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            with structlog.contextvars.bound_contextvars(request_id=request_id):
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
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls=UNTRACED)
