"""The database engine, connections for reads, and migrations."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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


# A pooled connection idle for longer than this is probed before use; one used more recently
# is handed out as is. (asyncpg's probe is BEGIN; SELECT; ROLLBACK: three round trips.)
PING_IF_IDLE_SECS = 1.0


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pool_pre_ping on every checkout: it cost three round trips per checkout (~15
        # checkouts per task). Connections idle for more than PING_IF_IDLE_SECS are still
        # probed (_ping_idle), so one that died while the pool was quiet (PostgreSQL restarted)
        # is replaced instead of failing a request. One that dies under load fails one
        # statement, is invalidated, and the activity is retried by Temporal.
        pool_pre_ping=False,
        # The most recently returned connection first: under light load a few connections
        # serve everything, and their prepared-statement caches stay warm.
        pool_use_lifo=True,
        # asyncpg's statement cache is per connection; keep it, but do not let SQLAlchemy
        # wrap every call in an extra prepared-statement round trip.
        connect_args={"server_settings": {"application_name": "orchestrator"}},
    )
    _ping_idle(engine)
    return engine


@contextlib.asynccontextmanager
async def read(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads outside a transaction (autocommit): one round trip per
    statement instead of BEGIN + statement + ROLLBACK. For single statements, or several
    whose mutual consistency does not matter."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


#: The same for a write that is one statement: it commits on its own, without BEGIN/COMMIT.
single_statement = read


def _ping_idle(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    @event.listens_for(sync_engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = record.driver_connection  # the asyncpg connection
        if driver is not None and driver.is_closed():
            # The server closed it (PostgreSQL restarted): asyncpg already knows, for free.
            raise exc.DisconnectionError("connection was closed by the server")
        last = record.info.get("checked_in")
        if last is None or time.monotonic() - last <= PING_IF_IDLE_SECS:
            return  # fresh from connect, or recently used
        if not dialect._do_ping_w_event(dbapi_connection):
            # The pool discards this connection and checks out (or opens) another one.
            raise exc.DisconnectionError("connection was closed while idle in the pool")


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`. Synchronous: call it before the event loop starts
    (or from a thread), because alembic's env runs its own loop."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def ping(engine: AsyncEngine) -> None:
    """One round trip to the database; raises when it cannot be reached."""
    async with read(engine) as conn:
        await conn.execute(sa.select(sa.true()))
