"""Alembic environment: migrations over the async engine, one process at a time.

The target is the SQLModel metadata of durable_orchestrator/data/tables.py, so
`alembic revision --autogenerate` (root alembic.ini) writes what changed in the models. The URL
comes from the config (`orchestrator migrate` sets it) or else from DATABASE_URL."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from durable_orchestrator.data.engine import async_url
from durable_orchestrator.data.tables import XID8, metadata

# Teach reflection our one custom column type, so autogenerate compares it instead of warning.
ischema_names.setdefault("xid8", XID8)

# Several processes (API replicas, workers, `up`) may migrate at once; serialise them.
_LOCK_ID = 7_233_001


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("set DATABASE_URL to the database to migrate or compare against")
    return async_url(url)


def _run(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _LOCK_ID})
    try:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _LOCK_ID})


async def _main() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_main())
