"""MemoryService against the real model and the real Postgres: relevance, isolation, rebuild,
snapshot + catch-up, deletes, cross-process freshness."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data.tables import Memory
from durable_orchestrator.settings import Settings
from memory.service import MemoryService

UNRELATED = [
    "The cat slept on the warm windowsill all afternoon.",
    "Bake the bread at 220 degrees for thirty minutes.",
    "The hiking trail climbs 800 metres through pine forest.",
    "Python 3.11 added exception groups and TaskGroup.",
    "The orchestra rehearsed Beethoven's fifth symphony.",
    "Replace the bicycle chain every 3000 kilometres.",
]


def uid() -> str:
    return f"mem-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def make_service(base_settings: Settings, engine: AsyncEngine, tmp_path: Path):
    made: list[MemoryService] = []

    def _make(**overrides) -> MemoryService:  # type: ignore[no-untyped-def]
        settings = base_settings.model_copy(update={"data_dir": tmp_path / "data", **overrides})
        svc = MemoryService(engine, settings)
        made.append(svc)
        return svc

    yield _make
    for svc in made:
        await svc.close()


@pytest.fixture
async def svc(make_service) -> AsyncIterator[MemoryService]:  # type: ignore[no-untyped-def]
    yield make_service()


async def test_revenue_memory_is_top_hit_for_sales_question(svc: MemoryService) -> None:
    user = uid()
    for text in UNRELATED:
        await svc.add(user, text)
    target = await svc.add(user, "Quarterly revenue grew 12% compared with the previous quarter.")
    hits = await svc.search(user, "how did sales change last quarter", limit=3)
    assert hits[0].id == target, [(h.text, h.score) for h in hits]
    assert hits[0].score > hits[1].score
    assert len(hits) == 3


async def test_user_never_sees_another_users_memories(svc: MemoryService) -> None:
    a, b = uid(), uid()
    # B's memories are near-copies of the query; A has fewer than `limit`, all unrelated.
    for i in range(30):
        await svc.add(b, f"How did sales change last quarter? Revenue grew {i}%.")
    mine = {await svc.add(a, UNRELATED[0]), await svc.add(a, UNRELATED[1])}
    hits = await svc.search(a, "how did sales change last quarter", limit=10)
    assert {h.id for h in hits} == mine
    b_hits = await svc.search(b, "how did sales change last quarter", limit=10)
    assert len(b_hits) == 10 and not mine & {h.id for h in b_hits}


async def test_isolation_holds_for_hnsw_users_too(make_service) -> None:  # type: ignore[no-untyped-def]
    svc = make_service(memory_flat_max=4)  # every user above 4 memories gets an HNSW index
    a, b = uid(), uid()
    for i in range(12):
        await svc.add(b, f"Sales last quarter changed by {i} percent")
    mine = [await svc.add(a, t) for t in UNRELATED]
    assert svc.index.kind(a) == "hnsw" and svc.index.kind(b) == "hnsw"
    hits = await svc.search(a, "how did sales change last quarter", limit=10)
    assert sorted(h.id for h in hits) == sorted(mine)


async def test_metadata_filter_is_exact_and_never_short(make_service) -> None:  # type: ignore[no-untyped-def]
    for flat_max in (50_000, 4):
        svc = make_service(memory_flat_max=flat_max)
        user = uid()
        for i in range(10):
            await svc.add(user, f"Revenue update number {i}", metadata={"project": "other"})
        tagged = {await svc.add(user, t, metadata={"project": "q3", "n": i}) for i, t in enumerate(UNRELATED[:3])}
        hits = await svc.search(user, "revenue update", limit=5, filter={"project": "q3"})
        assert {h.id for h in hits} == tagged, flat_max
        assert all(h.metadata["project"] == "q3" for h in hits)
        assert await svc.search(user, "revenue", limit=5, filter={"project": "none"}) == []


async def _results(svc: MemoryService, user: str, queries: list[str]) -> list[list[tuple[int, float]]]:
    return [[(h.id, round(h.score, 4)) for h in await svc.search(user, q, limit=5)] for q in queries]


QUERIES = ["how did sales change last quarter", "cooking bread", "classical music", "mountain walk"]


async def test_rebuild_from_postgres_gives_the_same_results(make_service) -> None:  # type: ignore[no-untyped-def]
    first = make_service()
    user = uid()
    for t in [*UNRELATED, "Quarterly revenue grew 12%."]:
        await first.add(user, t)
    before = await _results(first, user, QUERIES)
    await first.rebuild()
    assert await _results(first, user, QUERIES) == before
    fresh = make_service()  # another process: builds its cache from Postgres only
    assert await _results(fresh, user, QUERIES) == before
    assert fresh.loaded_from == "postgres"


async def test_snapshot_plus_catch_up_equals_full_rebuild(make_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    snap = tmp_path / "snap"
    writer = make_service(memory_flat_max=6)
    users = [uid(), uid()]
    ids = []
    for u in users:
        for t in UNRELATED:
            ids.append(await writer.add(u, t))
    writer.snapshot_path = snap / "faiss-snapshot.npz"
    await writer.snapshot()

    # After the snapshot: more writes (one user crosses into HNSW) and deletes.
    for u in users:
        await writer.add(u, "Quarterly revenue grew 12%.")
        await writer.add(u, "Sales fell slightly in the last quarter.")
    assert await writer.delete(users[0], ids[0])
    assert await writer.delete(users[1], ids[len(UNRELATED) + 2])

    restored = make_service(memory_flat_max=6)
    restored.snapshot_path = snap / "faiss-snapshot.npz"
    rebuilt = make_service(memory_flat_max=6)
    rebuilt.snapshot_path = tmp_path / "none" / "faiss-snapshot.npz"
    for u in users:
        assert await _results(restored, u, QUERIES) == await _results(rebuilt, u, QUERIES)
        assert restored.index.count(u) == rebuilt.index.count(u) == len(UNRELATED) + 1
    assert restored.loaded_from == "snapshot" and rebuilt.loaded_from == "postgres"
    deleted = {ids[0], ids[len(UNRELATED) + 2]}
    for u in users:
        assert not deleted & {h.id for h in await restored.search(u, "anything at all", limit=20)}


async def test_snapshot_of_another_database_is_ignored(make_service, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    svc = make_service()
    user = uid()
    await svc.add(user, UNRELATED[0])
    svc.snapshot_path = tmp_path / "s.npz"
    await svc.snapshot()
    svc._db_identity = "some-other-db"  # pretend the snapshot came from elsewhere
    await svc.snapshot()
    other = make_service()
    other.snapshot_path = tmp_path / "s.npz"
    assert len(await other.search(user, "cat", limit=5)) == 1
    assert other.loaded_from == "postgres"


async def test_delete_removes_from_results_immediately(svc: MemoryService) -> None:
    user = uid()
    gone = await svc.add(user, "Quarterly revenue grew 12%.")
    kept = await svc.add(user, UNRELATED[0])
    assert await svc.delete(user, gone)
    assert [h.id for h in await svc.search(user, "revenue growth", limit=5)] == [kept]
    assert not await svc.delete(user, gone)  # already gone
    assert not await svc.delete(uid(), kept)  # not theirs


async def test_write_in_one_process_is_visible_to_another_at_its_next_catch_up(make_service) -> None:  # type: ignore[no-untyped-def]
    """A search catches the cache up once `memory_sync_interval_secs` has passed: with 0 the
    very next search of the other process sees a write or a delete; with an interval not yet
    passed it serves its cache. No wall-clock window: the interval is the knob."""
    api_side = make_service()
    worker_side = make_service(memory_sync_interval_secs=0)
    lazy_side = make_service(memory_sync_interval_secs=3600)
    user = uid()
    await worker_side.add(user, UNRELATED[0])
    assert len(await worker_side.search(user, "revenue", limit=5)) == 1  # its cache is warm
    assert len(await lazy_side.search(user, "revenue", limit=5)) == 1

    new_id = await api_side.add(user, "Quarterly revenue grew 12%.")
    assert (await worker_side.search(user, "revenue", limit=5))[0].id == new_id
    assert new_id not in {h.id for h in await lazy_side.search(user, "revenue", limit=5)}

    assert await api_side.delete(user, new_id)
    assert new_id not in {h.id for h in await worker_side.search(user, "revenue", limit=5)}
    await lazy_side.sync(force=True)
    assert len(lazy_side_hits := await lazy_side.search(user, "revenue", limit=5)) == 1
    assert new_id not in {h.id for h in lazy_side_hits}


async def test_uncommitted_lower_id_is_not_skipped(make_service, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
    """A row whose id was allocated before a later row but committed after it (concurrent
    writers) still reaches the cache: the id watermark remembers recent gaps."""
    from durable_orchestrator.data import memories

    svc = make_service()
    user = uid()
    vec = await svc.embedder.encode_one("Quarterly revenue grew 12%.")
    conn = await engine.connect()
    trans = await conn.begin()
    slow_id = await memories.insert(conn, user_id=user, text="Quarterly revenue grew 12%.", embedding=vec)
    fast_id = await svc.add(user, UNRELATED[0])  # commits first, with a higher id
    assert fast_id > slow_id
    await svc.sync(force=True)
    await trans.commit()
    await conn.close()
    await svc.sync(force=True)
    assert slow_id in {h.id for h in await svc.search(user, "revenue", limit=5)}
    async with engine.connect() as c:
        count = sa.select(sa.func.count()).select_from(Memory).where(Memory.user_id == user)
        assert (await c.execute(count)).scalar() == 2
