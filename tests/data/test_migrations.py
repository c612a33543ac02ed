"""The alembic migrations and the SQLModel tables (data/tables.py) describe the same database."""

from __future__ import annotations

import asyncio

from alembic import command

from durable_orchestrator.data.engine import alembic_config


async def test_schema_module_matches_migrations(pg_url: str) -> None:
    # `check` autogenerates against the migrated database and raises on any difference.
    await asyncio.to_thread(command.check, alembic_config(pg_url))
