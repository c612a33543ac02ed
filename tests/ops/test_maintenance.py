"""Maintenance jobs: the key purge deletes only expired/revoked keys; jobs over tables this
schema does not have report `skipped`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from temporalio.testing import ActivityEnvironment

from activities.maintenance_activities import MaintenanceActivities
from durable_orchestrator.auth.api_keys import create_key, revoke_key
from durable_orchestrator.data.engine import async_url
from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import (
    ARCHIVE_AUDIT_LOG,
    EXPIRE_SHORT_TERM_MEMORY,
    PURGE_API_KEYS,
    MaintenanceInput,
    MaintenanceResult,
)
from tests.utils import Stack


async def _run(stack: Stack, workflow: str, inp: MaintenanceInput) -> MaintenanceResult:
    return await stack.client.execute_workflow(
        workflow, inp, id=f"test-{workflow}-{uuid.uuid4().hex[:8]}", task_queue=stack.settings.task_queue,
        result_type=MaintenanceResult,
    )


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
    async with stack.engine.connect() as conn:
        left = set((await conn.execute(sa.text("SELECT name FROM api_keys WHERE user_id=:u"), {"u": user})).scalars())
    assert left == {"active", "future", "expired", "revoked", "recently revoked"}

    result = await _run(stack, PURGE_API_KEYS, MaintenanceInput(older_than_secs=0))
    assert result.deleted >= 3
    async with stack.engine.connect() as conn:
        left = set((await conn.execute(sa.text("SELECT name FROM api_keys WHERE user_id=:u"), {"u": user})).scalars())
    assert left == {"active", "future"}


async def test_jobs_over_missing_tables_are_skipped(stack: Stack) -> None:
    async with stack.engine.connect() as conn:
        tables = set(
            (await conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))).scalars()
        )
    for workflow, table in ((EXPIRE_SHORT_TERM_MEMORY, "short_term_memory"), (ARCHIVE_AUDIT_LOG, "audit_log")):
        live = "expires_at > now()" if table == "short_term_memory" else "true"
        if table in tables:
            async with stack.engine.connect() as conn:
                before = (await conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {live}"))).scalar_one()
        result = await _run(stack, workflow, MaintenanceInput(older_than_secs=10**9))
        if table in tables:  # built by another module: a huge cut-off keeps every live row
            assert not result.skipped
            async with stack.engine.connect() as conn:
                after = (await conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {live}"))).scalar_one()
            assert after == before
        else:
            assert result.skipped == f"table {table} does not exist"


# --- the TTL and archive jobs against tables of the expected shape -------------------------------
# short_term_memory and audit_log belong to other modules; these tests create minimal tables of
# the shape the jobs rely on in a private schema (search_path), so they run on any branch.


@pytest.fixture
async def private_schema(pg_url: str) -> AsyncIterator[AsyncEngine]:
    schema = f"maint_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(async_url(pg_url))
    async with admin.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    eng = create_async_engine(async_url(pg_url), connect_args={"server_settings": {"search_path": schema}})
    try:
        yield eng
    finally:
        await eng.dispose()
        async with admin.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def test_ttl_job_deletes_only_expired_short_term_memory(
    private_schema: AsyncEngine, base_settings: Settings
) -> None:
    async with private_schema.begin() as conn:
        await conn.execute(sa.text(
            "CREATE TABLE short_term_memory (id serial PRIMARY KEY, note text, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        ))
        await conn.execute(sa.text(
            "INSERT INTO short_term_memory (note, created_at) VALUES "
            "('old', now() - interval '2 hours'), ('older', now() - interval '3 days'), ('fresh', now())"
        ))
    acts = MaintenanceActivities(engine=private_schema, settings=base_settings)
    result = await ActivityEnvironment().run(acts.expire_short_term_memory, MaintenanceInput(older_than_secs=3600))
    assert result.deleted == 2 and not result.skipped
    async with private_schema.connect() as conn:
        left = (await conn.execute(sa.text("SELECT note FROM short_term_memory"))).scalars().all()
    assert left == ["fresh"]

    # rows that carry their own expiry are judged by it
    async with private_schema.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE short_term_memory ADD COLUMN expires_at timestamptz"))
        await conn.execute(sa.text(
            "INSERT INTO short_term_memory (note, expires_at) VALUES "
            "('expired', now() - interval '1 second'), ('later', now() + interval '1 hour')"
        ))
    result = await ActivityEnvironment().run(acts.expire_short_term_memory, MaintenanceInput())
    assert result.deleted == 1
    async with private_schema.connect() as conn:
        left = set((await conn.execute(sa.text("SELECT note FROM short_term_memory"))).scalars())
    assert left == {"fresh", "later"}


async def test_audit_archive_writes_jsonl_then_deletes_only_old_rows(
    private_schema: AsyncEngine, base_settings: Settings, tmp_path: Path
) -> None:
    async with private_schema.begin() as conn:
        await conn.execute(sa.text(
            "CREATE TABLE audit_log (id bigserial PRIMARY KEY, actor text, action text, details jsonb, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        ))
        await conn.execute(sa.text(
            "INSERT INTO audit_log (actor, action, details, created_at) VALUES "
            "('alice', 'key.create', '{\"k\": 1}', now() - interval '100 days'), "
            "('bob', 'task.cancel', '{}', now() - interval '91 days'), "
            "('carol', 'task.create', '{}', now() - interval '1 day')"
        ))
    settings = base_settings.model_copy(update={"data_dir": tmp_path / "data", "audit_retention_days": 90})
    acts = MaintenanceActivities(engine=private_schema, settings=settings)
    result = await ActivityEnvironment().run(acts.archive_audit_log, MaintenanceInput())
    assert result.archived == 2 and result.deleted == 2
    lines = (await asyncio.to_thread(Path(result.archive_file).read_text)).splitlines()
    rows = [json.loads(line) for line in lines]
    assert {r["actor"] for r in rows} == {"alice", "bob"}
    assert rows[0]["details"] == {"k": 1} and "created_at" in rows[0]
    assert Path(result.archive_file).is_relative_to(tmp_path / "data" / "archive")
    async with private_schema.connect() as conn:
        left = (await conn.execute(sa.text("SELECT actor FROM audit_log"))).scalars().all()
    assert left == ["carol"]
