"""The reconciler on real PostgreSQL and a real Temporal dev server: a task row without a
workflow gets one, a row whose workflow closed without its finish step gets the close status
(and its event stream ends), and the API never loses or orphans a task when starting fails."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from api.app import create_app
from durable_orchestrator.auth.api_keys import create_key
from durable_orchestrator.data import tasks
from durable_orchestrator.data.tables import Step
from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import workflow_id_for
from durable_orchestrator.temporal.reconciler import Reconciler
from fake_openai import FakeOpenAI, Reply
from tests.api.helpers import read_sse
from tests.utils import Stack, running_stack
from worker import build_worker

# Short enough that each test sees the reconciler act within a second or two.
FAST = {"reconcile_interval_secs": 0.2, "reconcile_grace_secs": 0.0}


@pytest.fixture
async def stack(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> AsyncIterator[Stack]:
    async with running_stack(base_settings, temporal_client, fake_llm, **FAST) as s:
        yield s


async def _write_row_only(
    stack: Stack, description: str = "Write a short report on tea", status: str | None = None
) -> str:
    """What the API leaves behind when it dies after committing the row, before the start
    (with `status`: a row in that status, committed in the same transaction)."""
    task_id = tasks.new_task_id()
    async with stack.engine.begin() as conn:
        await tasks.insert_task(
            conn,
            task_id=task_id,
            user_id=stack.user,
            description=description,
            metadata={},
            task_queue=stack.settings.task_queue,
        )
        if status is not None:
            await conn.execute(sa.update(tasks.Task).where(tasks.Task.id == task_id).values(status=status))
    return task_id


async def _until(predicate: Any, what: str) -> None:
    for _ in range(600):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def _history_plans(client: Client, task_id: str) -> int:
    plans = 0
    async for ev in client.get_workflow_handle(workflow_id_for(task_id)).fetch_history_events():
        if ev.HasField("activity_task_scheduled_event_attributes"):
            plans += ev.activity_task_scheduled_event_attributes.activity_type.name == "plan_task"
    return plans


async def test_a_row_without_a_workflow_gets_one_and_completes(stack: Stack) -> None:
    task_id = await _write_row_only(stack)
    task = await stack.wait(task_id, timeout=60)
    assert task["status"] == "completed", task
    handle = stack.client.get_workflow_handle(workflow_id_for(task_id))
    await handle.result()  # the workflow closes just after the row says completed
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    assert desc.task_queue == stack.settings.task_queue
    assert await _history_plans(stack.client, task_id) == 1


async def test_terminated_workflow_closes_the_row_and_ends_the_stream(stack: Stack) -> None:
    stack.fake.script(Reply(delay=30))  # the plan call is held while we terminate
    task_id = await stack.submit()
    await _until(lambda: _received(stack.fake), "the plan call reached the LLM")
    handle = stack.client.get_workflow_handle(workflow_id_for(task_id))
    await handle.terminate(reason="operator pulled the plug")

    task = await stack.wait(task_id, timeout=30)
    assert task["status"] == "failed"
    assert task["error"] == "terminated: operator pulled the plug"
    evs = await read_sse(stack.http, f"/tasks/{task_id}/events", stack.headers, deadline_secs=30)
    assert evs[-1].event == "task.status"
    assert evs[-1].data == {"status": "failed", "error": "terminated: operator pulled the plug"}
    assert [int(e.id) for e in evs] == sorted(int(e.id) for e in evs)


async def _received(fake: FakeOpenAI) -> bool:
    return len(fake.requests) >= 1


async def test_unreachable_steps_end_the_task(stack: Stack) -> None:
    # Steps already stored win over a new plan (activities run at least once): these two
    # wait for each other, so the workflow's DAG loop can never start either.
    task_id = tasks.new_task_id()
    async with stack.engine.begin() as conn:
        await tasks.insert_task(
            conn,
            task_id=task_id,
            user_id=stack.user,
            description="d",
            metadata={},
            task_queue=stack.settings.task_queue,
        )
        await conn.execute(
            sa.insert(Step),
            [
                {
                    "task_id": task_id,
                    "index": 0,
                    "agent": "researcher",
                    "title": "a",
                    "instructions": "a",
                    "depends_on": [1],
                    "status": "pending",
                },
                {
                    "task_id": task_id,
                    "index": 1,
                    "agent": "writer",
                    "title": "b",
                    "instructions": "b",
                    "depends_on": [0],
                    "status": "pending",
                },
            ],
        )
    task = await stack.wait(task_id, timeout=60)
    assert task["status"] == "failed"
    assert task["error"] == "plan has unreachable steps"
    assert {s["status"] for s in task["steps"]} == {"skipped"}
    desc = await stack.client.get_workflow_handle(workflow_id_for(task_id)).describe()
    assert desc.status == WorkflowExecutionStatus.FAILED
    evs = await read_sse(stack.http, f"/tasks/{task_id}/events", stack.headers, deadline_secs=30)
    assert (evs[-1].event, evs[-1].data["status"]) == ("task.status", "failed")


async def test_a_running_row_whose_workflow_is_gone_fails(stack: Stack) -> None:
    task_id = await _write_row_only(stack, status="running")
    task = await stack.wait(task_id, timeout=30)
    assert task["status"] == "failed"
    assert task["error"] == "its workflow no longer exists (closed and past retention)"


async def test_rows_of_other_queues_and_recent_rows_are_left_alone(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    async with running_stack(
        base_settings, temporal_client, fake_llm, reconcile_interval_secs=0
    ) as s:
        other = await _write_row_only(s)  # this stack's queue, but no reconciler runs here
        recent = await _write_row_only(s)
        mine = Reconciler(
            temporal_client, s.engine, s.settings.model_copy(update={"task_queue": "elsewhere"})
        )
        assert (await mine.reconcile_once()).checked == 0
        patient = Reconciler(
            temporal_client, s.engine, s.settings.model_copy(update={"reconcile_grace_secs": 3600})
        )
        assert (await patient.reconcile_once()).checked == 0
        now = Reconciler(
            temporal_client, s.engine, s.settings.model_copy(update={"reconcile_grace_secs": 0})
        )
        report = await now.reconcile_once()
        assert sorted(report.started) == sorted([other, recent])
        # A second pass finds them running and changes nothing.
        again = await now.reconcile_once()
        assert again.started == [] and again.closed == {}
        for task_id in (other, recent):
            assert (await s.wait(task_id, timeout=60))["status"] == "completed"


async def test_a_workflow_that_timed_out_fails_the_row(stack: Stack) -> None:
    task_id = await _write_row_only(stack)
    # A run nobody works on (no worker polls its queue) that Temporal times out.
    await stack.client.start_workflow(
        "NoSuchWorkflow",
        id=workflow_id_for(task_id),
        task_queue=f"nobody-{uuid.uuid4().hex[:6]}",
        execution_timeout=timedelta(seconds=1),
    )
    task = await stack.wait(task_id, timeout=30)
    assert (task["status"], task["error"]) == ("failed", "the workflow timed out")


async def test_cancel_of_a_task_whose_workflow_never_started(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    async with running_stack(
        base_settings, temporal_client, fake_llm, reconcile_interval_secs=0
    ) as s:
        task_id = await _write_row_only(s)
        resp = await s.http.post(f"/tasks/{task_id}/cancel", headers=s.headers)
        assert resp.status_code == 202, resp.text
        task = await s.wait(task_id, timeout=30)
        assert task["status"] == "cancelled"
        again = await s.http.post(f"/tasks/{task_id}/cancel", headers=s.headers)
        assert again.status_code == 409


class _StartFails:
    """The API's Temporal client, whose start_workflow raises: before the server sees the
    call (Temporal unreachable) or after it accepted it (the answer was lost)."""

    def __init__(self, real: Client, *, accepted: bool) -> None:
        self._real, self._accepted = real, accepted

    async def start_workflow(self, *args: Any, **kwargs: Any) -> Any:
        if self._accepted:
            await self._real.start_workflow(*args, **kwargs)
        raise RPCError("deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextlib.asynccontextmanager
async def _api_with_failing_start(
    base: Settings, client: Client, *, accepted: bool
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], Settings]]:
    settings = base.model_copy(update={"task_queue": f"tq-{uuid.uuid4().hex[:8]}", **FAST})
    async with build_worker(settings, client) as worker:
        run = asyncio.create_task(worker.run())
        app = create_app(settings)
        try:
            async with app.router.lifespan_context(app):
                app.state.temporal = _StartFails(app.state.temporal, accepted=accepted)
                key, _ = await create_key(app.state.engine, f"user-{uuid.uuid4().hex[:8]}")
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                    yield http, {"X-API-Key": key}, settings
        finally:
            await worker.shutdown()
            with contextlib.suppress(Exception):
                await run


@pytest.mark.parametrize("accepted", [True, False], ids=["accepted-then-raised", "never-reached"])
async def test_a_failed_start_keeps_the_row_and_the_task_runs_once(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, accepted: bool
) -> None:
    async with _api_with_failing_start(base_settings, temporal_client, accepted=accepted) as (
        http,
        headers,
        _,
    ):
        resp = await http.post(
            "/tasks", json={"description": "Summarise the rules of go"}, headers=headers
        )
        assert resp.status_code == 202, resp.text
        task_id = resp.json()["id"]
        for _ in range(1200):
            task = (await http.get(f"/tasks/{task_id}", headers=headers)).json()
            if task["status"] in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(0.05)
        assert task["status"] == "completed", task
        assert await _history_plans(temporal_client, task_id) == 1
