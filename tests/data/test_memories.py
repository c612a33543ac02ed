"""data/memories.py against the real database: idempotent inserts, what a catch-up reads
(new rows, late-committing gaps, deletions with their overlap), filters, hydration, and the
database identity that guards FAISS snapshots."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import memories
from durable_orchestrator.data.engine import create_engine, migrate, plain_url


def uid() -> str:
    return f"dm-{uuid.uuid4().hex[:10]}"


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


async def _add(engine: AsyncEngine, user: str, text: str = "t", **kw) -> int:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        return await memories.insert(conn, user_id=user, text=text, embedding=vec(len(text)), **kw)


async def test_insert_with_a_source_key_is_idempotent(engine: AsyncEngine) -> None:
    user, key = uid(), f"task-result:{uuid.uuid4().hex}"
    first = await _add(engine, user, "a result", source_key=key)
    assert await _add(engine, user, "the same result again", source_key=key) == first
    # without a key every write is a new memory
    assert len({await _add(engine, user, "note"), await _add(engine, user, "note")}) == 2
    rows = await memories.hydrate(engine, user, [first])
    assert rows[first].text == "a result"


async def test_fetch_new_reads_past_the_watermark_and_the_gaps(engine: AsyncEngine) -> None:
    user = uid()
    ids = [await _add(engine, user, f"memory {i}", metadata={"i": i}) for i in range(4)]
    assert await memories.soft_delete(engine, user, ids[1])
    async with engine.connect() as conn:
        top = await memories.max_id(conn)
        rows = await memories.fetch_new(conn, ids[2], [ids[0], ids[1]], limit=10)
        assert top >= ids[3]
        assert await memories.fetch_new(conn, top, [], limit=10) == []
        page = [r.id for r in await memories.fetch_new(conn, ids[0] - 1, [], limit=2)]
        assert page[0] == ids[0] and len(page) == 2
    by_id = {r.id: r for r in rows}
    assert set(by_id) == {ids[0], ids[1], ids[3]}
    assert [r.id for r in rows] == sorted(by_id)
    assert by_id[ids[1]].embedding is None  # deleted: the cache drops it, nothing to index
    stored = memories.from_bytes([by_id[ids[0]].embedding])
    assert np.allclose(stored[0], vec(len("memory 0")))
    assert all(r.recent and r.user_id == user for r in rows)


async def test_deletions_are_read_back_with_an_overlap(engine: AsyncEngine) -> None:
    user = uid()
    gone, kept = await _add(engine, user, "gone"), await _add(engine, user, "kept")
    assert await memories.soft_delete(engine, user, gone)
    assert not await memories.soft_delete(engine, user, gone)  # already deleted
    assert not await memories.soft_delete(engine, uid(), kept)  # not theirs
    async with engine.connect() as conn:
        since = await memories.clock(conn)  # after the delete committed
        within = {d.id for d in await memories.fetch_deletions(conn, since, 30.0) if d.user_id == user}
        after = {d.id for d in await memories.fetch_deletions(conn, since, 0.0) if d.user_id == user}
    assert within == {gone}
    assert after == set()


async def test_filter_and_hydrate_see_only_the_users_live_rows(engine: AsyncEngine) -> None:
    user, other = uid(), uid()
    q3 = await _add(engine, user, "q3 numbers", metadata={"project": "q3", "n": 1})
    deleted = await _add(engine, user, "q3 draft", metadata={"project": "q3"})
    await _add(engine, user, "other project", metadata={"project": "q4"})
    theirs = await _add(engine, other, "their q3", metadata={"project": "q3"})
    assert await memories.soft_delete(engine, user, deleted)

    assert await memories.filtered_candidates(engine, user, {"project": "q3"}) == [q3]
    assert await memories.filtered_candidates(engine, user, {"project": "q3", "n": 2}) == []
    rows = await memories.hydrate(engine, user, [q3, deleted, theirs])
    assert set(rows) == {q3}
    assert rows[q3].metadata == {"project": "q3", "n": 1} and rows[q3].task_id is None
    assert await memories.hydrate(engine, user, []) == {}


@pytest.fixture
async def other_database(pg_url: str) -> AsyncIterator[str]:
    name = f"dm_other_{uuid.uuid4().hex[:8]}"
    base, _, query = plain_url(pg_url).partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(plain_url(pg_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await admin(f'CREATE DATABASE "{name}"')
    try:
        await asyncio.to_thread(migrate, url)
        yield url
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_database_identity_tells_databases_apart(engine: AsyncEngine, other_database: str) -> None:
    here = await memories.database_identity(engine)
    assert await memories.database_identity(engine) == here
    system_id, db, db_oid, rel_oid = here.split(":")
    assert system_id.isdigit()  # the test cluster lets us read pg_control_system()
    assert db and db_oid.isdigit() and rel_oid.isdigit()
    other_engine = create_engine(other_database)
    try:
        there = await memories.database_identity(other_engine)
    finally:
        await other_engine.dispose()
    assert there != here
    assert there.split(":")[0] == system_id  # same cluster, another database


def _rows_filtered_out(plan: dict) -> int:  # type: ignore[type-arg]
    return int(plan.get("Rows Removed by Filter", 0)) + sum(_rows_filtered_out(p) for p in plan.get("Plans", []))


async def test_a_catch_up_reads_only_its_rows_under_the_generic_plan(engine: AsyncEngine, pg_url: str) -> None:
    """Every process's memory cache runs the catch-up a few times a second as a prepared
    statement, which PostgreSQL soon plans generically (without looking at the values): that
    plan must still go straight to the new rows and the gaps, not walk the table."""
    from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

    user = uid()
    rows = [{"user_id": user, "text": f"bulk {i}", "embedding": vec(i), "metadata": {}, "task_id": None,
             "step_index": None, "source_key": None} for i in range(3000)]
    async with engine.begin() as conn:
        await memories.insert_many(conn, rows)
        top = await memories.max_id(conn)
    compiled = memories._NEW_ROWS.compile(dialect=asyncpg_dialect.dialect())
    values = {"after_id": str(top - 1), "limit": "500", "gaps": f"'{{{top - 2000}}}'"}
    args = ", ".join(values.get(name, "'60 seconds'") for name in compiled.positiontup)  # the interval
    conn = await asyncpg.connect(plain_url(pg_url))
    try:
        await conn.execute("ANALYZE memories")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE catch_up AS {compiled}")
        explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE catch_up({args})")
    finally:
        await conn.close()
    plan = json.loads(explained)[0]["Plan"]
    assert plan["Actual Rows"] == 2
    assert _rows_filtered_out(plan) == 0, plan
