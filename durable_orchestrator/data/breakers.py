"""The circuit breakers' rows (`circuit_breakers`): the statements of the state machine in
`durable_orchestrator.llm.breaker`, which decides when each one runs.

Every time is the database clock's (`now()`), so workers with skewed clocks agree on when an
open breaker may be probed. Transitions run in the caller's transaction, after `lock`; each
one that changes the state bumps `generation`, so a verdict of a call admitted before the
change can be told from one admitted after it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, select

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import CircuitBreakerState as Breaker

_THIS = Breaker.key == sa.bindparam("breaker")
_NOW = sa.func.now()
_NEXT_GENERATION = Breaker.generation + 1

# On the path of every LLM call: one primary-key read, no lock, no transaction.
_STATE = select(Breaker.state, Breaker.failures, Breaker.generation).where(_THIS)

_ENSURE = (
    pg_insert(Breaker)
    .values(key=sa.bindparam("breaker"))
    .on_conflict_do_nothing(index_elements=[Breaker.key])
)
_LOCK = (
    select(
        Breaker.state,
        Breaker.failures,
        Breaker.generation,
        Breaker.open_until,
        Breaker.probe_started_at,
        _NOW.label("now"),
    )
    .where(_THIS)
    .with_for_update()
)
_START_PROBE = (
    sa.update(Breaker)
    .where(_THIS)
    .values(state="half_open", probe_started_at=_NOW, generation=_NEXT_GENERATION, updated_at=_NOW)
    .returning(Breaker.generation)
)
_CLOSE = (
    sa.update(Breaker)
    .where(_THIS)
    .values(
        state="closed",
        failures=0,
        open_until=None,
        probe_started_at=None,
        generation=_NEXT_GENERATION,
        updated_at=_NOW,
    )
)
_RESET_FAILURES = sa.update(Breaker).where(_THIS).values(failures=0, updated_at=_NOW)
_OPEN = (
    sa.update(Breaker)
    .where(_THIS)
    .values(
        state="open",
        failures=sa.bindparam("failure_count"),
        open_until=_NOW + sa.bindparam("open_for", type_=sa.Interval),
        probe_started_at=None,
        generation=_NEXT_GENERATION,
        last_error=sa.bindparam("error"),
        updated_at=_NOW,
    )
)
_COUNT_FAILURE = (
    sa.update(Breaker)
    .where(_THIS)
    .values(
        failures=sa.bindparam("failure_count"), last_error=sa.bindparam("error"), updated_at=_NOW
    )
)
_RELEASE_PROBE = (
    sa.update(Breaker)
    .where(
        _THIS, Breaker.state == "half_open", Breaker.generation == sa.bindparam("probe_generation")
    )
    .values(probe_started_at=None, updated_at=_NOW)
)
_ALL = select(
    Breaker.key,
    Breaker.state,
    Breaker.failures,
    Breaker.open_until,
    Breaker.last_error,
    _NOW.label("now"),
).order_by(col(Breaker.key))


async def state(engine: AsyncEngine, key: str) -> sa.Row[Any] | None:
    """(state, failures, generation), or None for a breaker that never failed; read without a lock."""
    async with read(engine) as conn:
        return (await conn.execute(_STATE, {"breaker": key})).first()


async def ensure(conn: AsyncConnection, key: str) -> None:
    """Create the (closed) row if there is none yet, so that `lock` finds one."""
    await conn.execute(_ENSURE, {"breaker": key})


async def lock(conn: AsyncConnection, key: str) -> sa.Row[Any] | None:
    """Lock the row until the transaction ends: (state, failures, generation, open_until,
    probe_started_at, now), `now` being the database clock."""
    return (await conn.execute(_LOCK, {"breaker": key})).first()


async def start_probe(conn: AsyncConnection, key: str) -> int:
    """half_open, probe started now; the probe's generation."""
    return int((await conn.execute(_START_PROBE, {"breaker": key})).scalar_one())


async def close(conn: AsyncConnection, key: str) -> None:
    """closed, failure count and timers reset (a new generation)."""
    await conn.execute(_CLOSE, {"breaker": key})


async def reset_failures(conn: AsyncConnection, key: str) -> None:
    """Still closed, same generation, no consecutive failure any more."""
    await conn.execute(_RESET_FAILURES, {"breaker": key})


async def open_(
    conn: AsyncConnection, key: str, *, failures: int, open_for: timedelta, error: str
) -> None:
    """open until now + `open_for` (a new generation)."""
    await conn.execute(
        _OPEN, {"breaker": key, "failure_count": failures, "open_for": open_for, "error": error}
    )


async def count_failure(conn: AsyncConnection, key: str, *, failures: int, error: str) -> None:
    """Same state, one more consecutive failure."""
    await conn.execute(_COUNT_FAILURE, {"breaker": key, "failure_count": failures, "error": error})


async def release_probe(engine: AsyncEngine, key: str, generation: int) -> None:
    """A half-open breaker's probe ended without a verdict: the next caller may probe (unless
    the breaker has moved on since)."""
    async with engine.begin() as conn:
        await conn.execute(_RELEASE_PROBE, {"breaker": key, "probe_generation": generation})


async def all_states(engine: AsyncEngine) -> list[sa.Row[Any]]:
    """Every breaker, by key: (key, state, failures, open_until, last_error, now)."""
    async with read(engine) as conn:
        return list((await conn.execute(_ALL)).all())
