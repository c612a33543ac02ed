"""PostgreSQL LISTEN/NOTIFY: the default way live step deltas travel from workers to the API.

NOTIFY is delivered to every listening session when the sending transaction commits and costs
nothing when nobody listens, so it needs no extra component; payloads are capped by PostgreSQL
at 8000 bytes, which the publisher respects."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data.engine import plain_url

MAX_PAYLOAD_BYTES = 7900


async def notify(engine: AsyncEngine, channel: str, payload: str) -> None:
    """One NOTIFY in its own autocommit round trip."""
    async with engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.execute(select(func.pg_notify(channel, payload)))


async def listen(
    database_url: str,
    channel: str,
    on_payload: Callable[[str], None],
    on_lost: Callable[[], None],
) -> asyncpg.Connection:
    """A dedicated session LISTENing on `channel`; `on_lost` fires if the session dies."""
    conn = await asyncpg.connect(plain_url(database_url))

    def received(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        on_payload(payload)

    await conn.add_listener(channel, received)
    conn.add_termination_listener(lambda _conn: on_lost())
    return conn
