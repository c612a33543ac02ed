"""Per-user running bounds and priority, on real Temporal and PostgreSQL: a user over their
bound is never refused, their tasks wait in `queued` (FIFO) and start as slots free, and
another user's task does not wait behind that backlog."""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import select

from durable_orchestrator.auth.api_keys import create_key
from durable_orchestrator.data.tables import Task
from durable_orchestrator.temporal.contracts import workflow_id_for
from tests.utils import Stack, running_stack


async def _rows(stack: Stack, ids: list[str]) -> dict[str, tuple[str, datetime | None, datetime | None, datetime]]:
    async with stack.engine.connect() as conn:
        rows = await conn.execute(
            select(Task.id, Task.status, Task.admitted_at, Task.updated_at, Task.created_at).where(Task.id.in_(ids))
        )
        return {r.id: (r.status, r.admitted_at, r.updated_at, r.created_at) for r in rows}


async def _wait_other(stack: Stack, task_id: str, key: str) -> dict:  # type: ignore[type-arg]
    for _ in range(1200):
        view = (await stack.http.get(f"/tasks/{task_id}", headers={"X-API-Key": key})).json()
        if view["status"] in {"completed", "failed", "cancelled"}:
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} did not end: {view}")


def _most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, d in edges:
        now += d
        most = max(most, now)
    return most


async def test_a_backlog_waits_in_order_and_another_user_goes_first(base_settings, temporal_client, fake_llm) -> None:  # type: ignore[no-untyped-def]
    fake_llm.latency = 0.05
    async with running_stack(base_settings, temporal_client, fake_llm, user_max_running_tasks=2) as stack:
        a_ids = list(await asyncio.gather(*(stack.submit(f"backlog {i}") for i in range(50))))
        _, b_key = await stack.new_user()
        resp = await stack.http.post("/tasks", json={"description": "just one"}, headers={"X-API-Key": b_key})
        assert resp.status_code == 202, resp.text  # never refused, for A either
        b_id = resp.json()["id"]
        # A's backlog becomes visible as queued (once its workflows asked for a slot).
        for _ in range(600):
            statuses = {(await stack.get(i))["status"] for i in a_ids[10:]}
            if "queued" in statuses:
                break
            await asyncio.sleep(0.1)
        assert "queued" in statuses, statuses
        b_view = await _wait_other(stack, b_id, b_key)
        assert b_view["status"] == "completed"
        for i in a_ids:
            assert (await stack.wait(i, timeout=300))["status"] == "completed"
        rows = await _rows(stack, [*a_ids, b_id])
    b_submitted, b_finished = rows[b_id][3], rows[b_id][2]
    backlog = sorted(rows[i][2] for i in a_ids if rows[i][2] > b_submitted)  # A's, unfinished then
    assert len(backlog) >= 10, "A's backlog was gone before B submitted: the test proves nothing"
    assert b_finished < backlog[len(backlog) // 2]  # B did not wait behind half of it
    # Never more than two of A's tasks held a slot at once (FIFO order: tests/data/test_admission.py).
    assert _most_at_once([(rows[i][1], rows[i][2]) for i in a_ids]) <= 2


async def test_a_key_bound_wins_and_cancel_while_queued_moves_the_queue_on(stack: Stack) -> None:
    stack.fake.latency = 0.3
    key, _ = await create_key(stack.engine, stack.user, max_running_tasks=1)
    headers = {"X-API-Key": key}
    ids = []
    for i in range(3):
        resp = await stack.http.post("/tasks", json={"description": f"one at a time {i}"}, headers=headers)
        assert resp.status_code == 202
        ids.append(resp.json()["id"])
    # The workflows start together, so which task asks for the slot first is Temporal's order:
    # one takes it and the other two queue, oldest first.
    first, older, newer = await _one_admitted_two_queued(stack, ids)
    assert (await stack.http.post(f"/tasks/{older}/cancel", headers=headers)).status_code == 202
    assert (await stack.wait(older))["status"] == "cancelled"
    assert [(await stack.wait(i, timeout=120))["status"] for i in (first, newer)] == ["completed", "completed"]
    rows = await _rows(stack, ids)
    assert rows[older][1] is None  # the cancelled one never took a slot
    assert rows[newer][1] >= rows[first][2]  # the last one started after the first ended


async def _one_admitted_two_queued(stack: Stack, ids: list[str]) -> tuple[str, str, str]:
    for _ in range(300):
        rows = await _rows(stack, ids)
        queued = sorted((i for i in ids if rows[i][0] == "queued"), key=lambda i: rows[i][3])
        admitted = [i for i in ids if rows[i][1] is not None]
        if len(queued) == 2 and len(admitted) == 1:
            return admitted[0], queued[0], queued[1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected one admitted and two queued: {rows}")


async def test_priority_reaches_temporal(stack: Stack) -> None:
    task_id = await stack.submit("urgent", priority="high")
    low_id = await stack.submit("whenever", priority="low")
    for tid, expected in ((task_id, 1), (low_id, 5)):
        desc = await stack.client.get_workflow_handle(workflow_id_for(tid)).describe()
        priority = desc.raw_description.workflow_execution_info.priority
        assert (priority.priority_key, priority.fairness_key) == (expected, stack.user)
    bad = await stack.http.post("/tasks", json={"description": "x", "priority": "urgent"}, headers=stack.headers)
    assert bad.status_code == 422
    await asyncio.gather(stack.wait(task_id), stack.wait(low_id))
