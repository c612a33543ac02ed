"""Tracing setup, the instrumented LLM client, tool-call spans and log-context binding.

One trace runs from the HTTP request (FastAPI instrumentation) through `StartWorkflow`,
`RunWorkflow` and `RunActivity:<name>` (Temporal's TracingInterceptor) into the `llm <model>`
and `tool <name>` spans made here. Span attributes carry model, token counts and outcome, never
prompt or completion text.

Exporter: the standard OTEL_* variables. OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; otherwise spans are created (so trace ids reach the
logs) but not exported. OTEL_SDK_DISABLED=true turns tracing off; OTEL_SERVICE_NAME names the
service.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import structlog
from opentelemetry import trace
from temporalio import activity

from core import metrics
from core.llm import Completion, LLMClient
from core.pricing import cost_usd

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


# --- LLM --------------------------------------------------------------------------------------
def _outcome(exc: BaseException) -> str:
    kind = getattr(exc, "type", None) or type(exc).__name__
    if kind == "LLMHTTP429":
        return "rate_limited"
    if kind.startswith("LLMHTTP5"):
        return "server_error"
    if kind == "LLMTimeout":
        return "timeout"
    if kind == "LLMConnectionError":
        return "connection_error"
    if kind == "LLMMalformedResponse":
        return "malformed"
    if kind.startswith("LLMHTTP4"):
        return "client_error"
    return "error"


class InstrumentedLLM:
    """Wraps any LLMClient: one span `llm <model>` and the llm_* metrics per call."""

    def __init__(self, inner: LLMClient) -> None:
        self.inner = inner
        self.provider = inner.provider

    async def complete(self, *, model: str, messages: list[dict[str, Any]], **kwargs: Any) -> Completion:
        started = time.perf_counter()
        with tracer.start_as_current_span(f"llm {model}", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.system", self.provider)
            span.set_attribute("gen_ai.request.model", model)
            span.set_attribute("llm.message_count", len(messages))
            try:
                c = await self.inner.complete(model=model, messages=messages, **kwargs)
            except BaseException as exc:
                outcome = _outcome(exc)
                span.set_attribute("llm.outcome", outcome)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                metrics.record_llm_call(model, outcome, time.perf_counter() - started)
                raise
            cost, _priced = cost_usd(c.model, c.prompt_tokens, c.completion_tokens)
            span.set_attribute("gen_ai.response.model", c.model)
            span.set_attribute("gen_ai.usage.input_tokens", c.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", c.completion_tokens)
            span.set_attribute("llm.cost_usd", float(cost))
            span.set_attribute("llm.outcome", "ok")
            span.set_attribute("llm.tool_calls", len(c.tool_calls))
        # Labelled by the requested model: the configured (bounded) name, not whatever string
        # the provider echoes back.
        metrics.record_llm_call(
            model, "ok", time.perf_counter() - started, c.prompt_tokens, c.completion_tokens, float(cost)
        )
        return c

    async def close(self) -> None:
        await self.inner.close()


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


# --- logs -------------------------------------------------------------------------------------
def add_trace_id(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current OpenTelemetry trace/span id, when there is one."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


@contextlib.contextmanager
def activity_log_context(task_id: str | None = None, step: int | None = None, **extra: Any) -> Iterator[None]:
    """Bind task_id, workflow_id, step, activity and attempt to every log line of the block.

    Use at the top of an activity: `with activity_log_context(inp.task_id, inp.index): ...`."""
    values: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    if activity.in_activity():
        info = activity.info()
        values.update(workflow_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt)
    if task_id is not None:
        values["task_id"] = task_id
    if step is not None:
        values["step"] = step
    with structlog.contextvars.bound_contextvars(**values):
        yield
