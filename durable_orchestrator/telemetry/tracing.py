"""Tracing setup and tool-call spans.

One trace runs from the HTTP request (FastAPI instrumentation) through `StartWorkflow`,
`RunWorkflow` and `RunActivity:<name>` (Temporal's TracingInterceptor) into the `chat <model>`
spans (llm/instrumented.py) and the `tool <name>` spans made here. Span attributes never carry
prompt or completion text.

Exporter: the standard OTEL_* variables. OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; otherwise spans are created (so trace ids reach the
logs) but not exported. OTEL_SDK_DISABLED=true turns tracing off; OTEL_SERVICE_NAME names the
service.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace

from durable_orchestrator.telemetry import metrics

tracer = trace.get_tracer("orchestrator")
_configured = False


def setup_tracing(service_name: str) -> None:
    """Install a TracerProvider once per process, unless one is installed already (tests)."""
    global _configured
    if _configured or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    _configured = True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    )
    exporter_kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if endpoint and exporter_kind != "none":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def tracing_interceptors() -> list[Any]:
    """Client interceptors for `Client.connect`; the worker inherits them from the client."""
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


# --- tools ------------------------------------------------------------------------------------
@contextlib.contextmanager
def tool_span(tool: str) -> Iterator[trace.Span]:
    """For the tools module: `with tool_span("calculator"): ...` makes a span and counts
    tool_calls_total{tool,status} (ok, or error when the block raises). Arguments and
    results are not recorded."""
    with tracer.start_as_current_span(f"tool {tool}") as span:
        span.set_attribute("tool.name", tool)
        try:
            yield span
        except BaseException as exc:
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            metrics.record_tool_call(tool, "error")
            raise
        metrics.record_tool_call(tool, "ok")
