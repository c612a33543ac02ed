"""The LLM client wrapped in a span `llm <model>` and the llm_* metrics, one per call. Span
attributes carry model, token counts and outcome, never prompt or completion text."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from opentelemetry import trace

from durable_orchestrator.llm.client import Completion, LLMClient
from durable_orchestrator.llm.pricing import cost_usd
from durable_orchestrator.telemetry import metrics
from durable_orchestrator.telemetry.tracing import tracer


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

    def __init__(self, inner: LLMClient, *, prices_file: Path | None = None) -> None:
        self.inner = inner
        self.prices_file = prices_file
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
            cost, _priced = cost_usd(
                c.model, c.prompt_tokens, c.completion_tokens, requested=model, overrides_file=self.prices_file
            )
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
