"""`orchestrator migrate`: apply the database migrations (the compose `migrate` job runs it)."""

from __future__ import annotations

from pathlib import Path

from durable_orchestrator.cli.common import DataDirOption, console, database_url, fail
from durable_orchestrator.data.engine import migrate as run_migrations


def migrate(data_dir: Path = DataDirOption) -> None:
    """Upgrade the schema to the latest revision: DATABASE_URL's, or else the embedded
    PostgreSQL of the `orchestrator up` running in the data dir."""
    url = database_url(data_dir)
    try:
        run_migrations(url)
    except Exception as exc:
        raise fail(f"migration failed: {type(exc).__name__}: {exc}") from None
    console.print("database is at the latest revision")
