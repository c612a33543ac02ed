"""The LLM rate limits' token buckets (`llm_rate_buckets`), shared by every worker.

A bucket holds up to `cap` tokens and refills continuously at `rate` per second since its
`updated_at`; `durable_orchestrator.llm.limits` decides caps, costs and how long to wait.
Each statement here is one conditional upsert or update in autocommit: PostgreSQL holds the
row lock for that statement only, so concurrent workers never both take the last token and
nobody holds a lock across a round trip. Times are the database clock's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import select

from durable_orchestrator.data.tables import RateBucket


class Draw(NamedTuple):
    """Take `cost` tokens from the bucket `key`, which holds at most `cap` and refills `cap`
    per minute."""

    key: str
    cap: float
    cost: float


_KEY = sa.bindparam("bucket", type_=sa.Text)
_CAP = sa.bindparam("cap", type_=sa.Float)
_RATE = sa.bindparam("rate", type_=sa.Float)  # tokens per second
_COST = sa.bindparam("cost", type_=sa.Float)

# The bucket's level now: what it held at updated_at plus the refill since, at most `cap`.
# GREATEST: a statement that waited on the row lock has an older now() than the writer
# before it, and a negative elapsed time must not drain the bucket.
_ELAPSED = sa.cast(
    sa.func.greatest(0, sa.extract("epoch", sa.func.now() - RateBucket.updated_at)), sa.Float
)
_LEVEL = sa.func.least(_CAP, RateBucket.tokens + _ELAPSED * _RATE)

# Refill, check and take in one statement; a new bucket starts full. No row back = too few.
_TAKE = (
    pg_insert(RateBucket)
    .values(key=_KEY, tokens=_CAP - _COST, updated_at=sa.func.now())
    .on_conflict_do_update(
        index_elements=[RateBucket.key],
        set_={"tokens": _LEVEL - _COST, "updated_at": sa.func.now()},
        where=_LEVEL >= _COST,
    )
    .returning(RateBucket.tokens)
)
_SECONDS_SHORT = select((_COST - _LEVEL) / _RATE).where(RateBucket.key == _KEY)
_GIVE_BACK = (
    sa.update(RateBucket).where(RateBucket.key == _KEY).values(tokens=RateBucket.tokens + _COST)
)
_CHARGE = (
    sa.update(RateBucket)
    .where(RateBucket.key == _KEY)
    .values(tokens=sa.func.least(_CAP, RateBucket.tokens - _COST))
)


async def take(engine: AsyncEngine, draws: Sequence[Draw]) -> float | None:
    """Take from every bucket, or from none. None when taken; else the seconds until the
    first bucket that was short holds enough (0 or less if it refilled in between), and the
    buckets before it are given back what was taken from them."""
    taken: list[Draw] = []
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for draw in draws:
            params = _params(draw)
            if (await conn.execute(_TAKE, params)).first() is None:
                wait = (await conn.execute(_SECONDS_SHORT, params)).scalar_one()
                for done in taken:
                    await _give_back(conn, done)
                return float(wait)
            taken.append(draw)
    return None


async def charge(engine: AsyncEngine, key: str, *, cap: float, tokens: float) -> None:
    """Take `tokens` more (negative: give back), never filling past `cap`; the bucket may
    go negative, a debt later callers wait out."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(_CHARGE, {"bucket": key, "cap": cap, "cost": tokens})


async def _give_back(conn: AsyncConnection, draw: Draw) -> None:
    await conn.execute(_GIVE_BACK, {"bucket": draw.key, "cost": draw.cost})


def _params(draw: Draw) -> dict[str, object]:
    return {"bucket": draw.key, "cap": draw.cap, "rate": draw.cap / 60.0, "cost": draw.cost}
