"""/memory over HTTP (in-process app, real Postgres, real model) and the product hooks:
a completed task's result becomes a memory; the planner receives the user's memories."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import sqlalchemy as sa

from durable_orchestrator.data.tables import Memory
from tests.utils import Stack


async def _count(stack: Stack, user: str) -> int:
    async with stack.engine.connect() as conn:
        return (
            await conn.execute(sa.select(sa.func.count()).select_from(Memory).where(Memory.user_id == user))
        ).scalar_one()


async def _search(stack: Stack, headers: dict[str, str], **body: Any) -> list[dict[str, Any]]:
    resp = await stack.http.post("/memory/search", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]


async def test_write_search_delete_over_http(stack: Stack) -> None:
    ids = []
    for text in ["The cat slept on the windowsill.", "Quarterly revenue grew 12%.",
                 "Bake the bread at 220 degrees."]:
        resp = await stack.http.post("/memory", json={"text": text, "metadata": {"k": text[:3]}},
                                     headers=stack.headers)
        assert resp.status_code == 201, resp.text
        ids.append(resp.json()["id"])

    results = await _search(stack, stack.headers, query="how did sales change last quarter", limit=2)
    assert results[0]["id"] == ids[1]
    assert set(results[0]) == {"id", "text", "score", "metadata", "task_id"}
    assert results[0]["metadata"] == {"k": "Qua"} and results[0]["task_id"] is None
    assert len(results) == 2

    filtered = await _search(stack, stack.headers, query="sales", filter={"k": "The"})
    assert [r["id"] for r in filtered] == [ids[0]]

    # Another user: sees nothing of ours, cannot delete ours.
    _other, other_key = await stack.new_user()
    assert await _search(stack, {"X-API-Key": other_key}, query="revenue") == []
    resp = await stack.http.delete(f"/memory/{ids[1]}", headers={"X-API-Key": other_key})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"

    resp = await stack.http.delete(f"/memory/{ids[1]}", headers=stack.headers)
    assert resp.status_code == 204
    assert ids[1] not in {r["id"] for r in await _search(stack, stack.headers, query="revenue")}
    resp = await stack.http.delete(f"/memory/{ids[1]}", headers=stack.headers)
    assert resp.status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/memory/search", {"query": ""}, 422),
        ("/memory/search", {"query": "   "}, 422),
        ("/memory/search", {"query": "x", "limit": 0}, 422),
        ("/memory/search", {"query": "x", "limit": 10_000}, 422),
        ("/memory/search", {"query": "x", "filter": ["a"]}, 422),
        ("/memory/search", {"query": "x", "extra": 1}, 422),
        ("/memory", {"text": "x" * 1_000_000}, 413),
        ("/memory", {"text": "x" * 20_000}, 422),
        ("/memory", {"text": ""}, 422),
        ("/memory", {"text": "ok", "metadata": "not an object"}, 422),
        ("/memory", {"text": "ok", "metadata": [1, 2]}, 422),
        ("/memory", {"text": "ok", "metadata": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}, 422),
        ("/memory", {"text": "ok", "user_id": "someone-else"}, 422),
        ("/memory", {"text": "nul \x00 inside"}, 422),
        ("/memory", {"text": "ok", "metadata": {"k": "nul \x00"}}, 422),
    ],
)
async def test_bad_input_is_a_json_4xx_and_writes_nothing(
    stack: Stack, path: str, body: dict[str, Any], status: int
) -> None:
    resp = await stack.http.post(path, json=body, headers=stack.headers)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] and error["message"]
    assert await _count(stack, stack.user) == 0


async def test_memory_endpoints_need_a_key_and_the_scope(stack: Stack) -> None:
    resp = await stack.http.post("/memory/search", json={"query": "x"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
    from durable_orchestrator.auth.api_keys import create_key

    key, _ = await create_key(stack.engine, stack.user, scopes=("tasks:read",))
    resp = await stack.http.post("/memory", json={"text": "x"}, headers={"X-API-Key": key})
    assert resp.status_code == 403
    assert await _count(stack, stack.user) == 0


async def test_completed_task_result_is_searchable_afterwards(stack: Stack) -> None:
    task_id = await stack.submit("Summarise the migration habits of arctic terns")
    task = await stack.wait(task_id)
    assert task["status"] == "completed", task
    deadline = time.monotonic() + 30
    while True:  # queued when the task completed; the worker's memory writer embeds it shortly after
        results = await _search(stack, stack.headers, query="arctic tern migration", limit=5)
        if results:
            break
        assert time.monotonic() < deadline, "task result never reached memory"
        await asyncio.sleep(0.1)
    assert results[0]["task_id"] == task_id
    assert results[0]["text"] == task["result"][:4000]
    assert results[0]["metadata"]["source"] == "task_result"
    assert await _count(stack, stack.user) == 1  # one memory per task, even if retried

    # The next task's planner is given that memory.
    before = len(stack.fake.requests)
    second = await stack.submit("Write more about arctic tern migration routes")
    assert (await stack.wait(second))["status"] == "completed"
    plan_prompts = [
        r.body["messages"][1]["content"]
        for r in stack.fake.requests[before:]
        if r.body and r.body.get("response_format")
    ]
    assert plan_prompts and "Relevant results of earlier tasks" in plan_prompts[0]
    assert task["result"][:50] in plan_prompts[0]
