"""Maintenance jobs: the key purge deletes only expired/revoked keys; jobs over tables this
schema does not have report `skipped`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from core.apikeys import create_key, revoke_key
from core.contracts import (
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
        result = await _run(stack, workflow, MaintenanceInput(older_than_secs=10**9))
        if table in tables:  # built by another module: a huge cut-off deletes nothing
            assert result.deleted == 0 and not result.skipped
        else:
            assert result.skipped == f"table {table} does not exist"
