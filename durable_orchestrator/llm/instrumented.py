"""The LLM client wrapped in one span per call, named and attributed by the OpenTelemetry GenAI
conventions (`chat <model>`, `gen_ai.*`, telemetry/genai.py), plus our cost and the task/step
it ran for; and the llm_* and gen_ai.client.* metrics. Prompt and completion text reach the span
(`gen_ai.input.messages` / `gen_ai.output.messages`) only with ORCH_LOG_PROMPTS on.

Calls happen in activities, which a workflow replay does not re-run, so replays add no spans."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from opentelemetry import trace

from durable_orchestrator.llm.client import Completion, LLMClient
from durable_orchestrator.llm.pricing import cost_usd
from durable_orchestrator.telemetry import genai, metrics
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
    """Wraps any LLMClient: one span `chat <model>` and the LLM metrics per call."""

    def __init__(self, inner: LLMClient, *, prices_file: Path | None = None, log_prompts: bool = False) -> None:
        self.inner = inner
        self.prices_file = prices_file
        self.provider = inner.provider
        self.log_prompts = log_prompts

    async def complete(
        self, *, model: str, messages: list[dict[str, Any]], **kwargs: Any
    ) -> Completion:
        started = time.perf_counter()
        attributes: dict[str, Any] = {
            genai.OPERATION: genai.CHAT,
            genai.PROVIDER: self.provider,
            genai.SYSTEM: self.provider,
            genai.REQUEST_MODEL: model,
            "llm.message_count": len(messages),
            **genai.call_context(),
        }
        if kwargs.get("max_tokens"):
            attributes[genai.REQUEST_MAX_TOKENS] = kwargs["max_tokens"]
        if self.log_prompts:
            attributes[genai.INPUT_MESSAGES] = genai.messages_json(messages)
        with tracer.start_as_current_span(
            f"{genai.CHAT} {model}", kind=trace.SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                c = await self.inner.complete(model=model, messages=messages, **kwargs)
            except BaseException as exc:
                outcome = _outcome(exc)
                error_type = getattr(exc, "type", None) or type(exc).__name__
                span.set_attribute("llm.outcome", outcome)
                span.set_attribute(genai.ERROR_TYPE, error_type)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                elapsed = time.perf_counter() - started
                metrics.record_llm_call(model, outcome, elapsed)
                genai.record(
                    provider=self.provider,
                    request_model=model,
                    duration_s=elapsed,
                    error_type=error_type,
                )
                raise
            cost, _priced = cost_usd(
                c.model, c.prompt_tokens, c.completion_tokens, requested=model, overrides_file=self.prices_file
            )
            span.set_attribute(genai.RESPONSE_MODEL, c.model)
            span.set_attribute(genai.INPUT_TOKENS, c.prompt_tokens)
            span.set_attribute(genai.OUTPUT_TOKENS, c.completion_tokens)
            span.set_attribute(genai.COST_USD, float(cost))
            span.set_attribute("llm.outcome", "ok")
            span.set_attribute("llm.tool_calls", len(c.tool_calls))
            if self.log_prompts:
                span.set_attribute(genai.OUTPUT_MESSAGES, genai.messages_json(_output_message(c)))
        elapsed = time.perf_counter() - started
        # Labelled by the requested model: the configured (bounded) name, not whatever string
        # the provider echoes back.
        metrics.record_llm_call(
            model, "ok", elapsed, c.prompt_tokens, c.completion_tokens, float(cost)
        )
        genai.record(
            provider=self.provider,
            request_model=model,
            response_model=c.model,
            duration_s=elapsed,
            input_tokens=c.prompt_tokens,
            output_tokens=c.completion_tokens,
        )
        return c

    async def close(self) -> None:
        await self.inner.close()


def _output_message(c: Completion) -> list[dict[str, Any]]:
    message: dict[str, Any] = {"role": "assistant", "content": c.content}
    if c.tool_calls:
        message["tool_calls"] = [
            {"id": t.id, "name": t.name, "arguments": t.arguments} for t in c.tool_calls
        ]
    return [message]
