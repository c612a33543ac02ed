"""The circuit breakers' statements (data/breakers.py): each transition, on the database clock."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import breakers


async def test_transitions_and_their_times(engine: AsyncEngine) -> None:
    key = f"prov:m-{uuid.uuid4().hex[:8]}"
    assert await breakers.state(engine, key) is None

    async with engine.begin() as conn:
        await breakers.ensure(conn, key)
        await breakers.ensure(conn, key)  # a second worker's ensure is a no-op
        row = await breakers.lock(conn, key)
        assert row is not None and (row.state, row.failures) == ("closed", 0)
        await breakers.count_failure(conn, key, failures=1, error="HTTP 500")
    assert tuple(await breakers.state(engine, key)) == ("closed", 1, 0)  # same generation

    async with engine.begin() as conn:
        await breakers.open_(conn, key, failures=2, open_for=timedelta(seconds=30), error="HTTP 503")
        row = await breakers.lock(conn, key)
        # now() is the transaction's timestamp: open_until is exactly now + open_for.
        assert row.state == "open" and row.failures == 2 and row.generation == 1
        assert row.open_until - row.now == timedelta(seconds=30)
    [listed] = [r for r in await breakers.all_states(engine) if r.key == key]
    assert (listed.state, listed.failures, listed.last_error) == ("open", 2, "HTTP 503")

    async with engine.begin() as conn:
        assert await breakers.start_probe(conn, key) == 2
        row = await breakers.lock(conn, key)
        assert row.state == "half_open" and row.probe_started_at == row.now

    await breakers.release_probe(engine, key, generation=1)  # a stale probe releases nothing
    async with engine.begin() as conn:
        row = await breakers.lock(conn, key)
        assert row.probe_started_at is not None
    await breakers.release_probe(engine, key, generation=2)
    async with engine.begin() as conn:
        row = await breakers.lock(conn, key)
        assert row.state == "half_open" and row.probe_started_at is None
        await breakers.close(conn, key)
        row = await breakers.lock(conn, key)
        assert (row.state, row.failures, row.open_until, row.probe_started_at) == ("closed", 0, None, None)
        await breakers.count_failure(conn, key, failures=1, error="HTTP 500")
        await breakers.reset_failures(conn, key)

    await breakers.release_probe(engine, key, generation=3)  # only a half-open breaker has a probe
    assert tuple(await breakers.state(engine, key)) == ("closed", 0, 3)
