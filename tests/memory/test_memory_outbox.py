"""A completed task's result is queued for memory by the transaction that completes the task,
and a worker's memory writer moves it into `memories` later: once, whatever repeats or crashes
in between (real PostgreSQL, real model)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import memory_outbox, steps, tasks
from durable_orchestrator.data.tables import Memory, MemoryOutboxEntry
from durable_orchestrator.settings import Settings
from memory.service import MemoryService
from memory.writer import MemoryWriter, start_memory_writer, stop_memory_writer

PLAN = [{"agent": "writer", "title": "Write", "instructions": "write it", "depends_on": []}]


async def _task(engine: AsyncEngine, user: str, output: str, *, labels: list[str] | None = None) -> str:
    """A task whose only step has finished with `output`: its result once completed."""
    task_id = tasks.new_task_id()
    async with engine.begin() as conn:
        await tasks.insert_task(conn, task_id=task_id, user_id=user, description="Report on tea exports",
                                metadata={})
        await steps.save_plan(conn, task_id, PLAN, fallback=False, errors=[], labels=labels)
        await steps.start_step(conn, task_id, 0, "writer", exclude_outputs_of=[])
        await steps.mark_step_finished(conn, task_id, 0, output=output, model="gpt-4o-mini")
    return task_id


async def _queued(engine: AsyncEngine, task_id: str) -> list[tuple[str, dict]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(MemoryOutboxEntry.text, MemoryOutboxEntry.meta).where(MemoryOutboxEntry.task_id == task_id)
        )).all()
    return [(r[0], r[1]) for r in rows]


async def _stored(engine: AsyncEngine, task_id: str) -> list[tuple[int, str, str | None]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(Memory.id, Memory.text, Memory.source_key).where(Memory.task_id == task_id)
        )).all()
    return [(r.id, r.text, r.source_key) for r in rows]


def _user() -> str:
    return f"ob-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def svc(base_settings: Settings, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[MemoryService]:
    settings = base_settings.model_copy(update={"data_dir": tmp_path / "data", "memory_snapshot": False})
    service = MemoryService(engine, settings)
    yield service
    await service.close()


async def test_completing_a_task_queues_its_result_once(engine: AsyncEngine) -> None:
    user = _user()
    done = await _task(engine, user, "Tea exports rose 4% in 2025.", labels=["untrusted"])
    for _ in range(2):  # a retried finish_task: the task is already completed, nothing more
        finished = await tasks.finish_task(engine, done, "completed", remember_chars=9)
        assert finished.result == "Tea exports rose 4% in 2025."
    assert await _queued(engine, done) == [("Tea expor", {
        "source": "task_result", "task_id": done, "description": "Report on tea exports",
        "labels": ["untrusted"],
    })]

    failed = await _task(engine, user, "partial")
    await tasks.finish_task(engine, failed, "failed", error="boom", remember_chars=100)
    blank = await _task(engine, user, "   ")
    await tasks.finish_task(engine, blank, "completed", remember_chars=100)
    switched_off = await _task(engine, user, "not to be remembered")
    await tasks.finish_task(engine, switched_off, "completed")
    for task_id in (failed, blank, switched_off):
        assert await _queued(engine, task_id) == []


async def test_a_queued_result_left_by_a_dead_worker_becomes_searchable(
    engine: AsyncEngine, svc: MemoryService
) -> None:
    """The task completed (row queued) and its worker died before embedding: a writer started
    later embeds it, and it is then searchable; the outbox row is gone."""
    user = _user()
    task_id = await _task(engine, user, "Tea exports rose 4% in 2025, led by Kenya.")
    await tasks.finish_task(engine, task_id, "completed", remember_chars=4000)
    assert len(await _queued(engine, task_id)) == 1

    writer = MemoryWriter(svc, svc.settings)
    while await writer.write_batch():  # everything queued so far, other tests' leftovers too
        pass
    assert await _queued(engine, task_id) == []
    [(memory_id, text, source_key)] = await _stored(engine, task_id)
    assert (text, source_key) == ("Tea exports rose 4% in 2025, led by Kenya.", f"task-result:{task_id}")
    hits = await svc.search(user, "tea export growth", limit=5)
    assert [h.id for h in hits] == [memory_id]
    assert hits[0].metadata == {"source": "task_result", "task_id": task_id,
                                "description": "Report on tea exports"}


async def test_a_claim_that_never_commits_leaves_the_row_queued(
    engine: AsyncEngine, svc: MemoryService
) -> None:
    user = _user()
    task_id = await _task(engine, user, "Green tea prices fell in spring.")
    await tasks.finish_task(engine, task_id, "completed", remember_chars=4000)
    writer = MemoryWriter(svc, svc.settings)

    # A writer claims every queued row, then its process dies mid-batch.
    holder = await engine.connect()
    await holder.begin()
    claimed = await memory_outbox.claim(holder, 100_000)
    assert task_id in {p.task_id for p in claimed}
    # While the claim is held, another writer skips those rows instead of waiting or doubling.
    assert await asyncio.wait_for(writer.write_batch(), timeout=30) == 0
    await holder.invalidate()  # the connection is gone: PostgreSQL aborts its transaction
    await holder.close()
    assert len(await _queued(engine, task_id)) == 1
    assert await _stored(engine, task_id) == []

    # An encode that fails rolls the batch back too.
    async def broken(texts: object) -> object:
        raise RuntimeError("model crashed")

    svc.embedder.encode = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await writer.write_batch()
    del svc.embedder.encode
    assert len(await _queued(engine, task_id)) == 1

    while await writer.write_batch():
        pass
    assert await _queued(engine, task_id) == [] and len(await _stored(engine, task_id)) == 1


async def test_a_row_already_remembered_is_not_stored_twice(
    engine: AsyncEngine, svc: MemoryService
) -> None:
    """A queued row whose memory exists already (moved, then the same row queued again)."""
    user = _user()
    task_id = await _task(engine, user, "Oolong is partly oxidised.")
    await tasks.finish_task(engine, task_id, "completed", remember_chars=4000)
    writer = MemoryWriter(svc, svc.settings)
    while await writer.write_batch():
        pass
    async with engine.begin() as conn:
        await memory_outbox.add(conn, user_id=user, text="Oolong is partly oxidised.", metadata={},
                                task_id=task_id, source_key=memory_outbox.result_source_key(task_id))
    while await writer.write_batch():
        pass
    assert await _queued(engine, task_id) == [] and len(await _stored(engine, task_id)) == 1


async def test_the_running_writer_recovers_from_errors_and_stops_cleanly(
    engine: AsyncEngine, svc: MemoryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One claim fails (the database went away), one encode fails (the model fell over): the
    loop backs off, goes on, and the queued result is written; cancelling it ends it."""
    svc.settings = svc.settings.model_copy(update={"memory_writer_interval_secs": 0.05})
    failures = {"claim": 1, "encode": 1}
    real_claim, real_encode = memory_outbox.claim, svc.embedder.encode

    async def flaky_claim(conn, limit):  # type: ignore[no-untyped-def]
        if failures["claim"]:
            failures["claim"] -= 1
            raise ConnectionRefusedError("the database went away")
        return await real_claim(conn, limit)

    async def flaky_encode(texts):  # type: ignore[no-untyped-def]
        if failures["encode"]:
            failures["encode"] -= 1
            raise RuntimeError("torch fell over")
        return await real_encode(texts)

    monkeypatch.setattr(memory_outbox, "claim", flaky_claim)
    svc.embedder.encode = flaky_encode  # type: ignore[method-assign]
    user = _user()
    task_id = await _task(engine, user, "Rooibos is not a tea at all.")
    await tasks.finish_task(engine, task_id, "completed", remember_chars=4000)
    running = start_memory_writer(svc, svc.settings)
    try:
        deadline = time.monotonic() + 30
        while not await _stored(engine, task_id):
            assert not running.done(), running
            assert time.monotonic() < deadline, "the writer never wrote the queued result"
            await asyncio.sleep(0.05)
        assert failures == {"claim": 0, "encode": 0}
    finally:
        await stop_memory_writer(running)
    assert running.cancelled()
    assert await _queued(engine, task_id) == []
