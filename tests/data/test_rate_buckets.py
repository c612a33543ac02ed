"""The token-bucket statements (data/rate_buckets.py) against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from durable_orchestrator.data import rate_buckets
from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import RateBucket


def bucket() -> str:
    return f"rpm:m-{uuid.uuid4().hex[:8]}"


async def tokens(engine: AsyncEngine, key: str) -> float:
    async with read(engine) as conn:
        return (await conn.execute(select(RateBucket.tokens).where(RateBucket.key == key))).scalar_one()


async def test_concurrent_takers_get_exactly_the_cap(engine: AsyncEngine) -> None:
    # A cap of 5 per minute refills one grant every 12 s: far longer than 40 short statements.
    key, cap, takers = bucket(), 5.0, 40
    results = await asyncio.gather(
        *(rate_buckets.take(engine, [rate_buckets.Draw(key, cap, 1.0)]) for _ in range(takers))
    )
    granted = [r for r in results if r is None]
    refused = [r for r in results if r is not None]
    assert len(granted) == cap
    assert len(refused) == takers - cap
    # Each refusal says how long until one token is back: at most one refill period.
    assert all(0 < wait <= 60 / cap for wait in refused)
    assert 0 <= await tokens(engine, key) < 1


async def test_a_short_bucket_gives_back_what_the_others_gave(engine: AsyncEngine) -> None:
    requests, prompt_tokens = bucket(), bucket()
    assert await rate_buckets.take(engine, [rate_buckets.Draw(prompt_tokens, 100.0, 100.0)]) is None
    wait = await rate_buckets.take(
        engine, [rate_buckets.Draw(requests, 5.0, 1.0), rate_buckets.Draw(prompt_tokens, 100.0, 50.0)]
    )
    assert wait is not None and 0 < wait <= 30  # 50 tokens at 100/min
    # The request bucket was created full by the first draw, then given its token back.
    assert await tokens(engine, requests) == 5.0


async def test_charge_runs_into_debt_and_never_refills_past_the_cap(engine: AsyncEngine) -> None:
    key = bucket()
    assert await rate_buckets.take(engine, [rate_buckets.Draw(key, 10.0, 10.0)]) is None
    await rate_buckets.charge(engine, key, cap=10.0, tokens=5.0)  # used more than reserved
    assert await tokens(engine, key) == -5.0
    # In debt, a one-token call waits for the debt and its token: 6 tokens at 10/min.
    wait = await rate_buckets.take(engine, [rate_buckets.Draw(key, 10.0, 1.0)])
    assert wait is not None and 30 < wait <= 36
    await rate_buckets.charge(engine, key, cap=10.0, tokens=-100.0)  # a large refund
    assert await tokens(engine, key) == 10.0
