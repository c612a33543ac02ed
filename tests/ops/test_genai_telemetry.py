"""LLM spans and metrics follow the OpenTelemetry GenAI conventions (checked with in-memory
exporters), carry cost and task/step ids, hold no prompt text unless ORCH_LOG_PROMPTS, and a
workflow replay adds no spans."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer

from durable_orchestrator.llm.client import Completion, ToolCallRequest
from durable_orchestrator.llm.instrumented import InstrumentedLLM
from fake_openai import Reply
from tests.agents.helpers import plan_reply
from tests.utils import Stack
from workflows.task_workflow import TaskWorkflow

SECRET_TEXT = "ocelot marmalade"
_READER = InMemoryMetricReader()
_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def exporters() -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    otel_metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))


def _chat_spans() -> list[ReadableSpan]:
    return [s for s in _EXPORTER.get_finished_spans() if s.name.startswith("chat ")]


def _histogram_sum(name: str, **attrs: Any) -> float:
    data = _READER.get_metrics_data()
    total = 0.0
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name != name:
                    continue
                for p in m.data.data_points:
                    if all(p.attributes.get(k) == v for k, v in attrs.items()):
                        total += p.sum
    return total


def _prom(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_llm_spans_and_metrics_follow_the_genai_conventions(stack: Stack) -> None:
    stack.fake.script(
        plan_reply(("analyst", "Add the numbers", [])),
        Reply(content="Four.", prompt_tokens=70, completion_tokens=3),
    )
    input_before = _histogram_sum("gen_ai.client.token.usage", **{"gen_ai.token.type": "input"})
    output_prom_before = _prom(
        "gen_ai_client_token_usage_sum",
        gen_ai_operation_name="chat",
        gen_ai_provider_name="127.0.0.1",
        gen_ai_request_model="gpt-4o-mini",
        gen_ai_token_type="output",
    )
    spans_before = {s.context.span_id for s in _chat_spans()}
    task_id = await stack.submit(f"What is 2+2? {SECRET_TEXT}")
    task = await stack.wait(task_id)
    assert task["status"] == "completed", task

    spans = [s for s in _chat_spans() if s.context.span_id not in spans_before]
    mine = [s for s in spans if (s.attributes or {}).get("orchestrator.task.id") == task_id]
    assert len(mine) == 2, [dict(s.attributes or {}) for s in spans]  # the plan and the step
    plan, step = sorted(mine, key=lambda s: "orchestrator.step.index" in (s.attributes or {}))
    for span in (plan, step):
        a = dict(span.attributes or {})
        assert span.name == "chat gpt-4o-mini" and span.kind == trace.SpanKind.CLIENT
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "127.0.0.1" == a["gen_ai.system"]
        assert a["gen_ai.request.model"] == "gpt-4o-mini"
        assert a["gen_ai.response.model"] == "gpt-4o-mini"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert isinstance(a["orchestrator.cost.usd"], float) and a["orchestrator.cost.usd"] > 0
        assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
        assert not any(SECRET_TEXT in str(v) for v in a.values())
    step_attrs = dict(step.attributes or {})
    assert (
        step_attrs["orchestrator.step.index"] == 0 and step_attrs["orchestrator.agent"] == "analyst"
    )
    assert (step_attrs["gen_ai.usage.input_tokens"], step_attrs["gen_ai.usage.output_tokens"]) == (
        70,
        3,
    )
    assert "orchestrator.step.index" not in dict(plan.attributes or {})

    # Token usage as reported, in both the OpenTelemetry and the Prometheus histograms.
    prompt, completion = stack.fake.successful_usage()
    assert (
        _histogram_sum("gen_ai.client.token.usage", **{"gen_ai.token.type": "input"}) - input_before
        == prompt
    )
    output_prom = _prom(
        "gen_ai_client_token_usage_sum",
        gen_ai_operation_name="chat",
        gen_ai_provider_name="127.0.0.1",
        gen_ai_request_model="gpt-4o-mini",
        gen_ai_token_type="output",
    )
    assert output_prom - output_prom_before == completion
    assert (
        _histogram_sum(
            "gen_ai.client.operation.duration", **{"gen_ai.request.model": "gpt-4o-mini"}
        )
        > 0
    )

    # Replaying the workflow's history (with the tracing interceptor) makes no new spans.
    deadline = time.monotonic() + 20
    while not any(s.name == "RunWorkflow:TaskWorkflow" for s in _EXPORTER.get_finished_spans()):
        assert time.monotonic() < deadline, "no workflow span exported"
        await asyncio.sleep(0.1)
    history = await stack.client.get_workflow_handle(task["workflow_id"]).fetch_history()
    count_before = len(_EXPORTER.get_finished_spans())
    result = await Replayer(
        workflows=[TaskWorkflow], interceptors=[TracingInterceptor()]
    ).replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None
    new = _EXPORTER.get_finished_spans()[count_before:]
    assert not [s.name for s in new if s.name.startswith(("chat ", "RunWorkflow", "RunActivity"))]


class _Stub:
    provider = "stub"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    async def complete(self, *, model: str, messages: list[dict[str, Any]], **_: Any) -> Completion:
        if self.fail:
            raise ApplicationError("LLM request timed out", type="LLMTimeout")
        return Completion(
            content="the answer",
            model=f"{model}-2024-07-18",
            prompt_tokens=11,
            completion_tokens=2,
            latency_ms=1,
            tool_calls=[ToolCallRequest("c1", "calculator", '{"expression": "1+1"}')],
        )

    async def close(self) -> None:
        return None


async def test_prompt_text_reaches_spans_only_with_log_prompts() -> None:
    messages = [{"role": "user", "content": SECRET_TEXT}]
    seen_before = {s.context.span_id for s in _chat_spans()}
    await InstrumentedLLM(_Stub()).complete(model="stub-model", messages=messages)
    await InstrumentedLLM(_Stub(), log_prompts=True).complete(model="stub-model", messages=messages)
    quiet, loud = [
        dict(s.attributes or {}) for s in _chat_spans() if s.context.span_id not in seen_before
    ]
    assert not any(SECRET_TEXT in str(v) for v in quiet.values())
    assert SECRET_TEXT in loud["gen_ai.input.messages"]
    assert (
        "the answer" in loud["gen_ai.output.messages"]
        and "calculator" in loud["gen_ai.output.messages"]
    )
    assert loud["gen_ai.response.model"] == "stub-model-2024-07-18"


async def test_a_failed_call_carries_error_type_in_span_and_duration_metric() -> None:
    seen_before = {s.context.span_id for s in _chat_spans()}
    errors_before = _prom(
        "gen_ai_client_operation_duration_seconds_count",
        gen_ai_operation_name="chat",
        gen_ai_provider_name="stub",
        gen_ai_request_model="stub-failing",
        error_type="LLMTimeout",
    )
    with pytest.raises(Exception) as raised:
        await InstrumentedLLM(_Stub(fail=True)).complete(model="stub-failing", messages=[])
    assert getattr(raised.value, "type", None) == "LLMTimeout"
    (span,) = [s for s in _chat_spans() if s.context.span_id not in seen_before]
    assert span.attributes["error.type"] == "LLMTimeout"
    assert span.status.status_code == trace.StatusCode.ERROR
    assert (
        _prom(
            "gen_ai_client_operation_duration_seconds_count",
            gen_ai_operation_name="chat",
            gen_ai_provider_name="stub",
            gen_ai_request_model="stub-failing",
            error_type="LLMTimeout",
        )
        == errors_before + 1
    )
    assert _histogram_sum("gen_ai.client.operation.duration", **{"error.type": "LLMTimeout"}) > 0
