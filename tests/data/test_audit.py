"""The audit log (data/audit.py): its rows commit or roll back with the change they describe."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from durable_orchestrator.data import audit
from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import AuditEntry


async def rows(engine: AsyncEngine, actor: str) -> list:
    async with read(engine) as conn:
        return list(
            (await conn.execute(select(AuditEntry).where(AuditEntry.actor == actor).order_by(AuditEntry.id))).all()
        )


async def test_record_on_engine_and_in_the_callers_transaction(engine: AsyncEngine) -> None:
    actor = f"cli:{uuid.uuid4().hex[:8]}"
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    await audit.record(engine, actor, "key.create", "success", "rid-1", {"at": when, "n": 1})

    class Aborted(Exception):
        pass

    try:
        async with engine.begin() as conn:
            await audit.record(conn, actor, "task.delete", "success")
            raise Aborted
    except Aborted:
        pass
    async with engine.begin() as conn:
        await audit.record(conn, actor, "task.cancel", "not_found")

    [created, cancelled] = await rows(engine, actor)
    assert (created.action, created.outcome, created.request_id) == ("key.create", "success", "rid-1")
    # A value JSON cannot hold is stored as its str() rather than failing the audited action.
    assert created.details == {"at": str(when), "n": 1}
    assert created.at is not None
    assert (cancelled.action, cancelled.details, cancelled.request_id) == ("task.cancel", {}, None)
