"""The tasks API: auth, ownership, and bad input that must leave nothing behind."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from durable_orchestrator.data.tables import Task
from tests.utils import Stack


async def _task_count(stack: Stack, *users: str) -> int:
    """Tasks of this test's own users only: other tests submit tasks of their own meanwhile
    (or under pytest-xdist), so a count of every user's tasks proves nothing."""
    owners = (stack.user, *users)
    async with stack.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(Task).where(Task.user_id.in_(owners))
        return (await conn.execute(query)).scalar_one()


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """These tests only submit and read as the stack's user (or a fresh one), never script the
    fake: one stack serves the whole module."""
    return shared_stack


async def test_missing_key_is_401_with_instructions(stack: Stack) -> None:
    resp = await stack.http.post("/tasks", json={"description": "x"})
    assert resp.status_code == 401
    err = resp.json()["error"]
    assert err["code"] == "unauthorized"
    assert "orchestrator keys create" in err["message"]


async def test_wrong_key_is_401(stack: Stack) -> None:
    resp = await stack.http.get("/tasks/abc", headers={"X-API-Key": "orch_nope_nope"})
    assert resp.status_code == 401


async def test_other_users_task_is_404(stack: Stack) -> None:
    task_id = await stack.submit("mine")
    _, other_key = await stack.new_user()
    resp = await stack.http.get(f"/tasks/{task_id}", headers={"X-API-Key": other_key})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


async def test_user_id_in_body_must_match_key(stack: Stack) -> None:
    ok = await stack.http.post(
        "/tasks", json={"description": "d", "user_id": stack.user}, headers=stack.headers
    )
    assert ok.status_code == 202
    someone_else = f"someone-else-{uuid.uuid4().hex[:8]}"
    before = await _task_count(stack, someone_else)
    bad = await stack.http.post(
        "/tasks", json={"description": "d", "user_id": someone_else}, headers=stack.headers
    )
    assert bad.status_code == 403
    assert bad.json()["error"]["details"] == {"field": "user_id"}
    assert await _task_count(stack, someone_else) == before


async def test_accepted_response_shape(stack: Stack) -> None:
    resp = await stack.http.post(
        "/tasks", json={"description": "shape", "metadata": {"a": 1}}, headers=stack.headers
    )
    assert resp.status_code == 202
    body = resp.json()
    assert set(body) == {"id", "status", "workflow_id", "status_url"}
    assert body["status"] == "pending"
    assert body["workflow_id"] == f"task-{body['id']}"
    assert body["status_url"].endswith(f"/tasks/{body['id']}")
    task = await stack.get(body["id"])
    assert task["metadata"] == {"a": 1}
    for field in ("id", "user_id", "description", "metadata", "status", "steps", "result",
                  "error", "cost", "created_at", "updated_at", "workflow_id"):
        assert field in task


async def test_bad_input_is_4xx_naming_the_field_and_writes_nothing(stack: Stack) -> None:
    before = await _task_count(stack)
    cases = [
        ({"json": {"description": ""}}, 422, "description"),
        ({"json": {"description": "   "}}, 422, "description"),
        ({"json": {"description": "x" * 100_001}}, 422, "description"),
        ({"json": {"description": "x", "surprise": 1}}, 422, "surprise"),
        ({"json": {"description": 42}}, 422, "description"),
        ({"json": {"description": "x", "metadata": [1, 2]}}, 422, "metadata"),
        ({"json": {"description": "x", "metadata": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}}, 422, "metadata"),
        ({"json": {}}, 422, "description"),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, None),
        ({"content": b"x" * 300_000, "headers": {"Content-Type": "application/json"}}, 413, None),
    ]
    for kwargs, status, field in cases:
        headers = {**stack.headers, **kwargs.pop("headers", {})}
        resp = await stack.http.post("/tasks", headers=headers, **kwargs)
        assert resp.status_code == status, (kwargs, resp.text)
        err = resp.json()["error"]
        assert err["code"] and err["message"]
        if field:
            assert field in err["message"], err
            assert any(d["field"] == field for d in err["details"]), err
    assert await _task_count(stack) == before


async def test_description_limit_from_settings(stack: Stack) -> None:
    resp = await stack.http.post(
        "/tasks",
        json={"description": "y" * (stack.settings.max_description_chars + 1)},
        headers=stack.headers,
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["details"][0]["field"] == "description"


async def test_blank_idempotency_key_is_422_naming_the_header(stack: Stack) -> None:
    before = await _task_count(stack)
    for key in ("", "   ", "\t"):
        for _ in range(2):  # a second blank submission must not collide with a first
            resp = await stack.http.post(
                "/tasks", json={"description": "x"}, headers={**stack.headers, "Idempotency-Key": key}
            )
            assert resp.status_code == 422, (repr(key), resp.text)
            err = resp.json()["error"]
            assert "Idempotency-Key" in err["message"] or "idempotency-key" in err["message"], err
    assert await _task_count(stack) == before
