"""Live text of running steps on the event stream: deltas travel worker -> PostgreSQL NOTIFY
(or Redis pub/sub) -> API -> SSE client while the durable events stay exactly as they were."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import httpx

from fake_openai import Reply
from tests.api.helpers import SSE, read_sse, serve
from tests.utils import Stack, running_stack

ANSWER = " ".join(f"word{i}" for i in range(40))


def stream_steps(fake: Any, *, chunk_delay: float = 0.02, break_first: bool = False) -> None:
    """Step calls (the streamed ones) answer ANSWER a word at a time; plans stay the default."""
    broken: set[str] = set()

    def respond(body: dict[str, Any]) -> Reply | None:
        if not body.get("stream"):
            return None
        prompt = str(body["messages"][-1]["content"])
        if break_first and prompt not in broken:
            broken.add(prompt)
            return Reply(content=ANSWER, chunk_delay=chunk_delay, stream_break="drop")
        return Reply(content=ANSWER, chunk_delay=chunk_delay)

    fake.responder = respond


def by_attempt(events: list[SSE]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    out: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.event == "step.delta":
            out[(e.data["index"], e.data["attempt"])].append(e.data)
    return out


def check_deltas(events: list[SSE], outputs: dict[int, str]) -> None:
    finished_at = {e.data["index"]: n for n, e in enumerate(events) if e.event == "step.finished"}
    assert finished_at.keys() == outputs.keys()
    for (index, _attempt), deltas in by_attempt(events).items():
        assert [d["seq"] for d in deltas] == list(range(len(deltas)))  # in order, no gap
        assert outputs[index].startswith("".join(d["text"] for d in deltas))
    for index in outputs:
        first = next(n for n, e in enumerate(events) if e.event == "step.delta" and e.data["index"] == index)
        assert first < finished_at[index]  # the text showed before the step ended
        assert all(e.id is None for e in events if e.event == "step.delta")


async def run_and_watch(stack: Stack, query: str = "") -> tuple[str, list[SSE], dict[int, str]]:
    app = stack.http._transport.app  # type: ignore[attr-defined]
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        task_id = await stack.submit("stream the answer")
        events = await read_sse(http, f"/tasks/{task_id}/events{query}", stack.headers, deltas=True)
    task = await stack.get(task_id)
    assert task["status"] == "completed", task
    return task_id, events, {s["index"]: s["output"] for s in task["steps"]}


async def test_step_text_streams_over_postgres_notify(stack: Stack) -> None:
    stream_steps(stack.fake)
    task_id, events, outputs = await run_and_watch(stack)
    assert set(outputs.values()) == {ANSWER}
    check_deltas(events, outputs)
    # The durable record is untouched by streaming: a later reader gets exactly the same events.
    durable = [e for e in events if e.event != "step.delta"]
    assert all(e.id is not None for e in durable)
    app = stack.http._transport.app  # type: ignore[attr-defined]
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        again = await read_sse(http, f"/tasks/{task_id}/events", stack.headers, deltas=True)
    assert [(e.id, e.event, e.data) for e in again] == [(e.id, e.event, e.data) for e in durable]


async def test_step_text_streams_over_redis(base_settings, temporal_client, fake_llm) -> None:  # type: ignore[no-untyped-def]
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    async with running_stack(base_settings, temporal_client, fake_llm, redis_url=redis_url) as stack:
        stream_steps(stack.fake)
        _, events, outputs = await run_and_watch(stack)
    assert set(outputs.values()) == {ANSWER}
    check_deltas(events, outputs)


async def test_a_stream_broken_mid_answer_is_retried_and_never_half_saved(stack: Stack) -> None:
    stream_steps(stack.fake, break_first=True)
    _, events, outputs = await run_and_watch(stack)
    assert set(outputs.values()) == {ANSWER}  # whole answers only
    finished = [e.data for e in events if e.event == "step.finished"]
    assert all(f["preview"] == ANSWER[:200] for f in finished)
    attempts = by_attempt(events)
    for index in outputs:  # the broken first attempt streamed part of the text, then a retry did
        assert (index, 1) in attempts and (index, 2) in attempts
        assert len("".join(d["text"] for d in attempts[(index, 1)])) < len(ANSWER)
    check_deltas(events, outputs)


async def test_reconnect_gets_missed_durable_events_then_live_text(stack: Stack) -> None:
    stream_steps(stack.fake, chunk_delay=0.03)
    app = stack.http._transport.app  # type: ignore[attr-defined]
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        task_id = await stack.submit("stream, drop, resume")
        url = f"/tasks/{task_id}/events"
        first = await read_sse(http, url, stack.headers, deltas=True, until=lambda e: e.event == "step.delta")
        last_id = [e.id for e in first if e.id is not None][-1]
        rest = await read_sse(http, url, {**stack.headers, "Last-Event-ID": last_id}, deltas=True)
        full = await read_sse(http, url, stack.headers)
    durable = [e for e in first + rest if e.event != "step.delta"]
    assert [(e.id, e.event) for e in durable] == [(e.id, e.event) for e in full]
    assert any(e.event == "step.delta" for e in rest)


async def test_clients_can_ask_for_durable_events_only(stack: Stack) -> None:
    stream_steps(stack.fake)
    _, events, outputs = await run_and_watch(stack, "?deltas=false")
    assert outputs and not [e for e in events if e.event == "step.delta"]
    assert sum(e.event == "step.finished" for e in events) == len(outputs)


def step_requests(fake: Any) -> list[Any]:
    """The recorded step calls (plans ask for the `plan` json_schema)."""
    return [r for r in fake.requests if r.body and "response_format" not in r.body]


async def test_steps_nobody_watches_get_whole_answers(stack: Stack) -> None:
    stream_steps(stack.fake)
    task_id = await stack.submit("nobody is watching")
    task = await stack.wait(task_id)
    assert task["status"] == "completed", task
    calls = step_requests(stack.fake)
    assert len(calls) == len(task["steps"]) > 0
    assert not any(r.body.get("stream") for r in calls)  # parsed and published for nobody otherwise


async def test_durable_events_only_do_not_make_a_task_watched(stack: Stack) -> None:
    stream_steps(stack.fake)
    await run_and_watch(stack, "?deltas=false")
    assert step_requests(stack.fake) and not any(r.body.get("stream") for r in step_requests(stack.fake))


async def test_unwatched_steps_stream_when_configured(base_settings, temporal_client, fake_llm) -> None:  # type: ignore[no-untyped-def]
    fake_llm.reset()
    async with running_stack(base_settings, temporal_client, fake_llm, llm_stream_unwatched=True) as stack:
        stream_steps(stack.fake)
        task = await stack.wait(await stack.submit("stream for nobody"))
    assert task["status"] == "completed"
    assert {s["output"] for s in task["steps"]} == {ANSWER}
    assert all(r.body.get("stream") for r in step_requests(fake_llm))
