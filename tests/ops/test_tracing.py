"""One trace from HTTP POST /tasks through the workflow into each activity and its LLM call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.utils import Stack

DESCRIPTION = "Secret-free but recognisable prompt text: zebra quokka"


class _ToCurrentTest(SpanProcessor):
    """Added to the global provider once (a provider cannot drop a processor again): it hands
    finished spans to the exporter of the test running now, and to nobody between tests, so
    exporters do not pile up on the provider for the rest of the session."""

    exporter: InMemorySpanExporter | None = None

    def on_end(self, span: ReadableSpan) -> None:
        if self.exporter is not None:
            self.exporter.export((span,))


_FORWARD = _ToCurrentTest()


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if _FORWARD not in provider._active_span_processor._span_processors:
        provider.add_span_processor(_FORWARD)
    _FORWARD.exporter = InMemorySpanExporter()
    try:
        yield _FORWARD.exporter
    finally:
        _FORWARD.exporter.shutdown()
        _FORWARD.exporter = None


async def test_span_tree_http_to_llm(stack: Stack, exporter: InMemorySpanExporter) -> None:
    task_id = await stack.submit(DESCRIPTION)
    assert (await stack.wait(task_id))["status"] == "completed"

    deadline = time.monotonic() + 20
    while True:  # workflow spans are exported when the workflow task completes
        spans = exporter.get_finished_spans()
        names = {s.name for s in spans}
        if "RunWorkflow:TaskWorkflow" in names and any(n.startswith("chat ") for n in names):
            break
        assert time.monotonic() < deadline, sorted(names)
        await asyncio.sleep(0.1)

    by_id = {s.context.span_id: s for s in spans}
    http = [s for s in spans if s.name == "POST /tasks"]
    assert len(http) == 1, sorted(names)
    trace_id = http[0].context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]

    def chain(span):  # type: ignore[no-untyped-def]
        out = [span.name]
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            out.append(span.name)
        return out

    step_llm = [
        s for s in in_trace
        if s.name.startswith("chat ") and "RunActivity:run_step" in chain(s)
    ]
    assert step_llm, [chain(s) for s in in_trace]
    path = chain(step_llm[0])
    # llm ← RunActivity:run_step ← StartActivity:run_step ← StartWorkflow ← POST /tasks; the
    # SDK's RunWorkflow span is a (zero-length) child of StartWorkflow in the same trace.
    wanted = ["RunActivity:run_step", "StartActivity:run_step", "StartWorkflow:TaskWorkflow", "POST /tasks"]
    assert all(n in path for n in wanted), path
    positions = [path.index(n) for n in wanted]
    assert positions == sorted(positions), path
    run_wf = [s for s in in_trace if s.name == "RunWorkflow:TaskWorkflow"]
    assert run_wf and chain(run_wf[0])[1:] == ["StartWorkflow:TaskWorkflow", "POST /tasks"], [chain(s) for s in run_wf]
    plan_llm = [s for s in in_trace if s.name.startswith("chat ") and "RunActivity:plan_task" in chain(s)]
    assert plan_llm, "the planner's LLM call is in the same trace"

    attrs = dict(step_llm[0].attributes or {})
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["llm.outcome"] == "ok"
    for s in in_trace:  # never prompt text in span attributes
        for v in (s.attributes or {}).values():
            assert "zebra quokka" not in str(v), s.name


async def test_one_span_per_request_and_none_for_probes(stack: Stack, exporter: InMemorySpanExporter) -> None:
    task_id = await stack.submit("read me")
    assert (await stack.http.get(f"/tasks/{task_id}", headers=stack.headers)).status_code == 200
    assert (await stack.http.get("/healthz")).status_code == 200
    assert (await stack.http.get("/metrics")).status_code == 200
    http = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    names = sorted(s.name for s in http)
    # the GET is one server span with no children from the framework (dependencies, encoding)
    get = [s for s in http if s.name == "GET /tasks/{task_id}"]
    assert len(get) == 1, names
    children = [s.name for s in exporter.get_finished_spans() if s.parent and s.parent.span_id == get[0].context.span_id]
    assert children == [], children
    assert not [n for n in names if "healthz" in n or "metrics" in n], names
