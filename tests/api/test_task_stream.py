"""Listing (keyset pages), the SSE event stream (read to the end, resume with Last-Event-ID)
and POST /tasks?wait=."""

from __future__ import annotations

import asyncio

import httpx

from fake_openai import Hold, Reply
from fake_openai.plans import is_plan_request
from tests.api.helpers import read_sse, serve
from tests.utils import Stack


async def test_listing_pages_newest_first_own_tasks_only(stack: Stack) -> None:
    mine = [await stack.submit(f"task {i}") for i in range(5)]
    _, other_key = await stack.new_user()
    await stack.http.post("/tasks", json={"description": "not yours"}, headers={"X-API-Key": other_key})
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        resp = await stack.http.get("/tasks", params=params, headers=stack.headers)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        pages += 1
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [t["id"] for t in seen] == list(reversed(mine))  # newest first, no dup, no gap
    keys = [(t["created_at"], t["id"]) for t in seen]
    assert keys == sorted(keys, reverse=True)
    assert all(set(t) == {"id", "status", "description", "metadata", "workflow_id", "created_at", "updated_at"} for t in seen)

    for task_id in mine:
        await stack.wait(task_id)
    done = (await stack.http.get("/tasks?status=completed&limit=100", headers=stack.headers)).json()
    assert {t["id"] for t in done["items"]} == set(mine) and done["next_cursor"] is None
    none = (await stack.http.get("/tasks?status=failed", headers=stack.headers)).json()
    assert none == {"items": [], "next_cursor": None}

    for bad in ("?cursor=garbage", "?cursor=" + "A" * 40, "?limit=0", "?limit=101", "?status=bogus"):
        resp = await stack.http.get("/tasks" + bad, headers=stack.headers)
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["error"]["code"] == "validation_error"


async def test_sse_reads_to_the_end_and_resumes_exactly(stack: Stack) -> None:
    # Every step's LLM call waits behind `hold`: the task is running until the test says so.
    hold = Hold()
    stack.fake.responder = lambda body: None if is_plan_request(body) else Reply(hold=hold)
    app = stack.http._transport.app  # type: ignore[attr-defined]
    task_id = await stack.submit("stream me")
    url_path = f"/tasks/{task_id}/events"
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        # Client A joins while the task runs, reads two events and hangs up.
        first = await read_sse(http, url_path, stack.headers, max_events=2)
        assert len(first) == 2
        await hold.reached()
        # Client B reconnects with Last-Event-ID while a step is held, so the task is still
        # running when B is connected; only then does the step answer, and B reads to the end.
        connected = asyncio.Event()
        reading = asyncio.create_task(
            read_sse(http, url_path, {**stack.headers, "Last-Event-ID": first[-1].id}, connected=connected)
        )
        await asyncio.wait_for(connected.wait(), 30)
        assert (await stack.get(task_id))["status"] == "running"
        hold.release()
        rest = await reading
        # Client C, after the end, reads everything from the start.
        full = await read_sse(http, url_path, stack.headers)
        # And resuming after the terminal event ends at once with nothing.
        after_end = await read_sse(http, url_path, {**stack.headers, "Last-Event-ID": full[-1].id})
    ids = [int(e.id) for e in full]
    assert ids == sorted(set(ids))
    assert [(e.id, e.event, e.data) for e in first + rest] == [(e.id, e.event, e.data) for e in full]
    assert full[0].event == "task.status" and full[0].data == {"status": "pending"}
    assert full[-1].event == "task.status" and full[-1].data["status"] == "completed"
    types = [e.event for e in full]
    assert "task.planned" in types
    planned = next(e for e in full if e.event == "task.planned")
    n_steps = len(planned.data["steps"])
    assert types.count("step.started") == n_steps and types.count("step.finished") == n_steps
    assert after_end == []
    task = await stack.get(task_id)
    assert task["status"] == "completed"


async def test_sse_query_param_and_bad_last_event_id(stack: Stack) -> None:
    task_id = await stack.submit("short")
    await stack.wait(task_id)
    full = await read_sse(stack.http, f"/tasks/{task_id}/events", stack.headers)
    tail = await read_sse(stack.http, f"/tasks/{task_id}/events?after={full[1].id}", stack.headers)
    assert [e.id for e in tail] == [e.id for e in full[2:]]
    bad = await stack.http.get(f"/tasks/{task_id}/events", headers={**stack.headers, "Last-Event-ID": "abc"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    # Past a bigint: refused before the query, not a stream that breaks mid-response.
    huge = "2149213706904103187974222512128"
    for where in ({"params": {"after": huge}}, {"headers": {**stack.headers, "Last-Event-ID": huge}}):
        resp = await stack.http.get(f"/tasks/{task_id}/events", **{"headers": stack.headers, **where})
        assert resp.status_code == 422, resp.text
    missing = await stack.http.get("/tasks/nope/events", headers=stack.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_wait_returns_finished_task_or_202(stack: Stack) -> None:
    fast = await stack.http.post("/tasks?wait=30", json={"description": "fast one"}, headers=stack.headers)
    assert fast.status_code == 200, fast.text
    body = fast.json()
    assert body["status"] == "completed" and body["result"] and body["steps"]
    assert body == await stack.get(body["id"])  # same body as GET /tasks/{id}

    hold = Hold()  # the plan waits until the test releases it: the wait runs out first
    stack.fake.script(Reply(hold=hold))
    slow = await stack.http.post("/tasks?wait=0.5", json={"description": "slow one"}, headers=stack.headers)
    assert slow.status_code == 202, slow.text
    assert set(slow.json()) == {"id", "status", "workflow_id", "status_url"}
    hold.release()
    await stack.wait(slow.json()["id"], timeout=60)

    too_long = await stack.http.post(
        f"/tasks?wait={stack.settings.max_wait_secs + 1}", json={"description": "x"}, headers=stack.headers
    )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["details"][0]["field"] == "wait"
    negative = await stack.http.post("/tasks?wait=-1", json={"description": "x"}, headers=stack.headers)
    assert negative.status_code == 422


async def test_wait_does_not_block_other_requests(stack: Stack) -> None:
    """While one request waits, the API keeps answering (it polls Postgres, never holds the LLM)."""
    hold = Hold()  # the task's plan is held: the waiting request cannot finish meanwhile
    stack.fake.script(Reply(hold=hold))
    waiting = asyncio.create_task(
        stack.http.post("/tasks?wait=60", json={"description": "waited"}, headers=stack.headers)
    )
    await hold.reached()
    quick = await stack.http.get("/tasks?limit=1", headers=stack.headers)
    assert quick.status_code == 200
    assert not waiting.done()
    hold.release()
    resp = await waiting
    assert resp.status_code == 200 and resp.json()["status"] == "completed"
