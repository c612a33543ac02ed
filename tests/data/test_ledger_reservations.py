"""Ledger reservations on the real PostgreSQL: concurrent reservations of one user never pass
the same check together, a pending row counts at its worst case until settled or released."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import ledger, tasks
from durable_orchestrator.data.engine import create_engine


async def _task(engine: AsyncEngine, user: str) -> str:
    task_id = tasks.new_task_id()
    async with engine.begin() as conn:
        await tasks.insert_task(conn, task_id=task_id, user_id=user, description="d", metadata={})
    return task_id


def _reservation(
    task_id: str, key: str, tokens: int = 100, cost: str = "0.01"
) -> ledger.Reservation:
    return ledger.Reservation(
        task_id=task_id,
        step_index=0,
        purpose="step",
        model="gpt-4o-mini",
        call_key=key,
        tokens=tokens,
        cost=Decimal(cost),
        priced=True,
    )


async def test_concurrent_reservations_stop_exactly_at_the_caps(pg_url: str) -> None:
    # A pool as large as the crowd, so every reservation really is in flight at once.
    engine = create_engine(pg_url, pool_size=40)
    try:
        user = f"user-{uuid.uuid4().hex[:8]}"
        task_ids = [await _task(engine, user) for _ in range(4)]
        # Task cap: 5 calls of 100 tokens; daily cap: 12 calls' worth of USD for the user.
        caps = ledger.Caps(task_tokens=500, user_cost_today=Decimal("0.12"))
        attempts = [_reservation(t, f"{t}:{n}") for t in task_ids for n in range(10)]
        results = await asyncio.gather(*(ledger.reserve(engine, r, caps) for r in attempts))

        granted = [r for r, refused in zip(attempts, results, strict=True) if refused is None]
        assert len(granted) == 12  # the daily cap binds first: 4 tasks x 5 would be 20
        per_task = {t: sum(r.task_id == t for r in granted) for t in task_ids}
        assert max(per_task.values()) <= 5
        spends = [await ledger.spend(engine, t) for t in task_ids]
        assert spends[0].user_cost_today == Decimal("0.12")
        assert all(s.task_tokens <= 500 for s in spends)
        assert sum(s.task_tokens for s in spends) == 1200
        refused = [s for s in results if s is not None]
        # Every refusal is justified by what was reserved when it was decided.
        assert len(refused) == 28
        assert all(
            s.task_tokens + 100 > 500 or s.user_cost_today + Decimal("0.01") > Decimal("0.12")
            for s in refused
        )
    finally:
        await engine.dispose()


async def test_a_pending_row_counts_its_worst_case_until_settled_or_released(
    engine: AsyncEngine,
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    task_id = await _task(engine, user)
    caps = ledger.Caps(task_tokens=250)
    assert await ledger.reserve(engine, _reservation(task_id, f"{task_id}:a"), caps) is None
    assert await ledger.reserve(engine, _reservation(task_id, f"{task_id}:b"), caps) is None
    # Two pending calls (their worker may have died): 200 of 250 counted, a third does not fit.
    assert (await ledger.spend(engine, task_id)).task_tokens == 200
    refused = await ledger.reserve(engine, _reservation(task_id, f"{task_id}:c"), caps)
    assert refused is not None and refused.task_tokens == 200
    # The same call reserved again (a repeated delivery) is not a second reservation.
    assert await ledger.reserve(engine, _reservation(task_id, f"{task_id}:a"), caps) is None
    assert (await ledger.spend(engine, task_id)).task_tokens == 200

    async with engine.begin() as conn:
        cost = await ledger.record_llm_call(
            conn,
            task_id=task_id,
            step_index=0,
            purpose="step",
            model="gpt-4o-mini-2024-07-18",
            requested_model="gpt-4o-mini",
            prompt_tokens=30,
            completion_tokens=10,
            latency_ms=5,
            call_key=f"{task_id}:a",
        )
    assert cost > 0
    await ledger.release(engine, f"{task_id}:b")
    spend = await ledger.spend(engine, task_id)
    assert (spend.task_tokens, spend.task_cost) == (40, cost)
    # A release never undoes a settled call.
    await ledger.release(engine, f"{task_id}:a")
    assert (await ledger.spend(engine, task_id)).task_tokens == 40

    rows = await ledger.usage(engine, user, "model")
    assert [(r.key, r.llm_calls, r.pending_calls) for r in rows] == [
        ("gpt-4o-mini-2024-07-18", 1, 0)
    ]
