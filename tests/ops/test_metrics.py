"""Prometheus metrics after a task run: names, labels, bounded label values."""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from tests.utils import Stack

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _scrape(stack: Stack) -> tuple[str, Samples]:
    resp = await stack.http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text, _parse(resp.text)


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a sample grew: the registry is process-global, so earlier tests' counts are
    in both scrapes and only the difference belongs to this test."""
    key = (name, frozenset(labels.items()))
    assert key in after, f"{name}{labels} is not exported"
    return after[key] - before.get(key, 0.0)


async def test_metrics_after_a_task_run(stack: Stack) -> None:
    _, before = await _scrape(stack)
    task_id = await stack.submit("Compare green and black tea")
    task = await stack.wait(task_id)
    assert task["status"] == "completed"
    text, after = await _scrape(stack)

    def delta(name: str, **labels: str) -> float:
        return _delta(before, after, name, **labels)

    assert delta("tasks_submitted_total") == 1
    assert delta("tasks_finished_total", status="completed") == 1
    assert delta("task_duration_seconds_bucket", le="+Inf") == 1
    assert delta("task_duration_seconds_count") == 1
    for agent, n in Counter(s["agent"] for s in task["steps"]).items():
        assert delta("step_duration_seconds_count", agent=agent) == n, agent
    calls = len(stack.fake.requests)  # the plan and one call per step, all answered 200
    assert calls == 1 + len(task["steps"])
    assert delta("llm_requests_total", model="gpt-4o-mini", outcome="ok") == calls
    assert delta("llm_latency_seconds_count", model="gpt-4o-mini") == calls
    prompt, completion = stack.fake.successful_usage()
    assert delta("llm_tokens_total", kind="prompt", model="gpt-4o-mini") == prompt
    assert delta("llm_tokens_total", kind="completion", model="gpt-4o-mini") == completion
    assert "# TYPE llm_cost_usd_total counter" in text
    assert "# TYPE tool_calls_total counter" in text
    # HTTP metrics by route template, never the raw path: the submission, then the scrape
    # below finds exactly the one status read made after the last scrape.
    assert delta("http_requests_total", code="202", method="POST", route="/tasks") == 1
    assert delta("http_requests_total", code="200", method="GET", route="/tasks/{task_id}") >= 1
    await stack.get(task_id)
    _, again = await _scrape(stack)
    assert _delta(after, again, "http_requests_total", code="200", method="GET", route="/tasks/{task_id}") == 1
    assert _delta(after, again, "http_request_duration_seconds_count", method="GET", route="/tasks/{task_id}") == 1
    # No unbounded label values: no task ids, no user ids
    assert task_id not in text
    assert stack.user not in text


async def test_unknown_route_is_one_label(shared_stack: Stack) -> None:
    stack = shared_stack
    for i in range(3):
        await stack.http.get(f"/no/such/path/{i}")
    text = (await stack.http.get("/metrics")).text
    assert 'route="unmatched"' in text
    assert "/no/such/path" not in text


async def test_request_id_is_echoed(shared_stack: Stack) -> None:
    stack = shared_stack
    resp = await stack.http.get("/healthz", headers={"X-Request-ID": "req-123"})
    assert resp.headers["x-request-id"] == "req-123"
    fresh = await stack.http.get("/healthz")
    assert len(fresh.headers["x-request-id"]) == 32
