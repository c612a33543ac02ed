"""Maintenance jobs on the real tables: each deletes exactly the rows past their age (expired
short-term memory, audit rows past retention after archiving them, keys past their grace)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.maintenance_activities import MaintenanceActivities
from durable_orchestrator.auth.api_keys import create_key, revoke_key
from durable_orchestrator.data.tables import ApiKey, AuditEntry, ShortTermEntry, Task, User
from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import (
    ARCHIVE_AUDIT_LOG,
    PURGE_API_KEYS,
    MaintenanceInput,
    MaintenanceResult,
)
from fake_openai.server import FakeOpenAI
from memory import short_term
from tests.utils import Stack, running_stack


async def _run(stack: Stack, workflow: str, inp: MaintenanceInput) -> MaintenanceResult:
    return await stack.client.execute_workflow(
        workflow, inp, id=f"test-{workflow}-{uuid.uuid4().hex[:8]}", task_queue=stack.settings.task_queue,
        result_type=MaintenanceResult,
    )


async def _key_names(engine: AsyncEngine, user: str) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(sa.select(ApiKey.name).where(ApiKey.user_id == user))).scalars())


async def test_purge_deletes_only_expired_and_revoked_keys(stack: Stack) -> None:
    user = f"purge-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    await create_key(stack.engine, user, name="active")
    await create_key(stack.engine, user, name="future", expires_at=now + timedelta(days=3))
    await create_key(stack.engine, user, name="expired", expires_at=now - timedelta(seconds=1))
    _, revoked = await create_key(stack.engine, user, name="revoked")
    assert await revoke_key(stack.engine, revoked.id)
    _, recent_revoked = await create_key(stack.engine, user, name="recently revoked")
    assert await revoke_key(stack.engine, recent_revoked.id)

    # grace period of one hour: nothing of ours is old enough yet
    result = await _run(stack, PURGE_API_KEYS, MaintenanceInput(older_than_secs=3600))
    assert await _key_names(stack.engine, user) == {"active", "future", "expired", "revoked", "recently revoked"}

    result = await _run(stack, PURGE_API_KEYS, MaintenanceInput(older_than_secs=0))
    assert result.deleted >= 3
    assert await _key_names(stack.engine, user) == {"active", "future"}


async def _new_task(engine: AsyncEngine) -> str:
    task_id, user = uuid.uuid4().hex, f"maint-{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(pg_insert(User).values(id=user).on_conflict_do_nothing())
        await conn.execute(sa.insert(Task).values(
            id=task_id, user_id=user, description="d", status="completed", workflow_id=f"task-{task_id}",
        ))
    return task_id


async def _short_term_contents(engine: AsyncEngine, task_id: str) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(ShortTermEntry.content).where(ShortTermEntry.task_id == task_id))
        return set(rows.scalars())


async def test_ttl_job_deletes_only_expired_short_term_memory(engine: AsyncEngine, base_settings: Settings) -> None:
    acts = MaintenanceActivities(engine=engine, settings=base_settings)
    env = ActivityEnvironment()
    await env.run(acts.expire_short_term_memory, MaintenanceInput())  # other tests' leftovers
    task_id = await _new_task(engine)
    async with engine.begin() as conn:
        for content, ttl_hours in (("expired", -2), ("long expired", -72), ("later", 1), ("much later", 48)):
            await short_term.add_entry(
                conn, task_id=task_id, step_index=0, kind="note", content=content,
                ttl_hours=ttl_hours, dedupe_key=content,
            )

    result = await env.run(acts.expire_short_term_memory, MaintenanceInput())
    assert result.deleted == 2
    assert await _short_term_contents(engine, task_id) == {"later", "much later"}

    # Rows are judged by their own expiry: an age cut-off does not reach live rows, and a
    # second run finds nothing more to do.
    result = await env.run(acts.expire_short_term_memory, MaintenanceInput(older_than_secs=0))
    assert result.deleted == 0
    assert await _short_term_contents(engine, task_id) == {"later", "much later"}


async def test_audit_archive_writes_jsonl_then_deletes_only_old_rows(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    rows = [
        {"actor": f"alice-{tag}", "action": "key.create", "outcome": "ok", "request_id": None,
         "details": {"k": 1}, "at": now - timedelta(days=100)},
        {"actor": f"bob-{tag}", "action": "task.cancel", "outcome": "denied", "request_id": "r-1",
         "details": {}, "at": now - timedelta(days=91)},
        {"actor": f"carol-{tag}", "action": "task.create", "outcome": "ok", "request_id": None,
         "details": {}, "at": now - timedelta(days=1)},
    ]
    async with running_stack(
        base_settings, temporal_client, fake_llm, data_dir=tmp_path / "data", audit_retention_days=90
    ) as stack:
        async with stack.engine.begin() as conn:
            ids = (await conn.execute(sa.insert(AuditEntry).returning(AuditEntry.id, sort_by_parameter_order=True), rows)).scalars().all()
        old_ids = set(ids[:2])

        result = await _run(stack, ARCHIVE_AUDIT_LOG, MaintenanceInput())

        assert result.archived == 2 and result.deleted == 2
        assert Path(result.archive_file).is_relative_to(tmp_path / "data" / "archive")
        lines = (await asyncio.to_thread(Path(result.archive_file).read_text)).splitlines()
        archived = {r["id"]: r for r in map(json.loads, lines)}
        assert set(archived) == old_ids
        alice = archived[ids[0]]
        assert set(alice) == {"id", "at", "actor", "action", "outcome", "request_id", "details"}
        assert alice["actor"] == f"alice-{tag}" and alice["details"] == {"k": 1}
        assert datetime.fromisoformat(alice["at"]) == rows[0]["at"]
        assert archived[ids[1]]["request_id"] == "r-1"
        async with stack.engine.connect() as conn:
            left = (await conn.execute(sa.select(AuditEntry.id).where(AuditEntry.id.in_(ids)))).scalars().all()
        assert left == [ids[2]]
