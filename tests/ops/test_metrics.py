"""Prometheus metrics after a task run: names, labels, bounded label values."""

from __future__ import annotations

import re

from tests.utils import Stack


def _samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


async def test_metrics_after_a_task_run(stack: Stack) -> None:
    task_id = await stack.submit("Compare green and black tea")
    task = await stack.wait(task_id)
    assert task["status"] == "completed"

    resp = await stack.http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    samples = _samples(text)

    def has(pattern: str) -> bool:
        return any(re.match(pattern, s) for s in samples)

    assert has(r"tasks_submitted_total \d"), "tasks_submitted_total"
    assert has(r'tasks_finished_total\{status="completed"\} \d')
    assert has(r'task_duration_seconds_bucket\{le="\+Inf"\} [1-9]')
    agents = {s["agent"] for s in task["steps"]}
    for agent in agents:
        assert has(rf'step_duration_seconds_count\{{agent="{agent}"\}} [1-9]'), agent
    assert has(r'llm_requests_total\{model="gpt-4o-mini",outcome="ok"\} [1-9]')
    assert has(r'llm_latency_seconds_count\{model="gpt-4o-mini"\} [1-9]')
    assert has(r'llm_tokens_total\{kind="prompt",model="gpt-4o-mini"\} [1-9]')
    assert has(r'llm_tokens_total\{kind="completion",model="gpt-4o-mini"\} [1-9]')
    assert "# TYPE llm_cost_usd_total counter" in text
    assert "# TYPE tool_calls_total counter" in text
    # HTTP metrics by route template, never the raw path
    assert has(r'http_requests_total\{code="202",method="POST",route="/tasks"\} [1-9]')
    assert has(r'http_requests_total\{code="200",method="GET",route="/tasks/\{task_id\}"\} [1-9]')
    assert has(r'http_request_duration_seconds_count\{method="GET",route="/tasks/\{task_id\}"\} [1-9]')
    # No unbounded label values: no task ids, no user ids
    assert task_id not in text
    assert stack.user not in text


async def test_unknown_route_is_one_label(stack: Stack) -> None:
    for i in range(3):
        await stack.http.get(f"/no/such/path/{i}")
    text = (await stack.http.get("/metrics")).text
    assert 'route="unmatched"' in text
    assert "/no/such/path" not in text


async def test_request_id_is_echoed(stack: Stack) -> None:
    resp = await stack.http.get("/healthz", headers={"X-Request-ID": "req-123"})
    assert resp.headers["x-request-id"] == "req-123"
    fresh = await stack.http.get("/healthz")
    assert len(fresh.headers["x-request-id"]) == 32
