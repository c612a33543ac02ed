"""Database engine and migrations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def async_url(url: str) -> str:
    """Accept the URL forms users paste (postgres://, postgresql://) and pin the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]!r}")


def plain_url(url: str) -> str:
    """libpq-style URL, as asyncpg.connect and psql want it."""
    return "postgresql://" + async_url(url)[len("postgresql+asyncpg://") :]


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # asyncpg's statement cache is per connection; keep it, but do not let SQLAlchemy
        # wrap every call in an extra prepared-statement round trip.
        connect_args={"server_settings": {"application_name": "orchestrator"}},
    )


def _alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`. Synchronous: call it before the event loop starts
    (or from a thread), because alembic's env runs its own loop."""
    from alembic import command

    command.upgrade(_alembic_config(url), revision)
