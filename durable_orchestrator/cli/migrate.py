"""`orchestrator migrate`: apply the database migrations (the compose `migrate` job runs it)."""

from __future__ import annotations

from durable_orchestrator.cli.common import console, fail
from durable_orchestrator.data.engine import migrate as run_migrations
from durable_orchestrator.settings import get_settings


def migrate() -> None:
    """Upgrade DATABASE_URL's schema to the latest revision."""
    url = get_settings().database_url
    if not url:
        raise fail("DATABASE_URL is not set")
    try:
        run_migrations(url)
    except Exception as exc:
        raise fail(f"migration failed: {type(exc).__name__}: {exc}") from None
    console.print("database is at the latest revision")
