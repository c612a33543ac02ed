"""The memory writer: a worker's background loop that embeds queued memories.

A completed task's result is queued in `memory_outbox` by the transaction that completes the
task (durable_orchestrator/data/tasks.py), so no task waits on an embedding. The writer claims
queued rows in batches (`FOR UPDATE SKIP LOCKED`: every worker runs one and they share the
backlog), embeds each batch in one forward pass, and in the same transaction inserts the rows
into `memories` and deletes them from the outbox. The claim is the transaction: a writer that
dies mid-batch (worker killed, connection lost) leaves its rows in the outbox for the next pass
of any writer; nothing is lost and nothing is stored twice (`source_key` is unique in both
tables).

It polls, every `memory_writer_interval_secs` while idle and at once after a full batch, rather
than LISTENing: polling batches naturally (a notification per completed task would wake it per
row and encode one text at a time, the cost this loop exists to spread), needs no dedicated
connection or reconnect handling, and an idle poll is one empty index scan.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from durable_orchestrator.data import memories, memory_outbox
from durable_orchestrator.settings import Settings
from durable_orchestrator.telemetry import metrics
from memory.service import MemoryService

log = structlog.get_logger(__name__)

MAX_BACKOFF_SECS = 30.0


class MemoryWriter:
    def __init__(self, memory: MemoryService, settings: Settings) -> None:
        self.memory = memory
        self.batch = settings.memory_writer_batch
        self.interval = settings.memory_writer_interval_secs

    async def run(self) -> None:
        """Until cancelled. Database and model errors are logged and retried with backoff."""
        failures = 0
        while True:
            try:
                if not self.memory.embedder.loaded:
                    await self.memory.embedder.warm()  # or wait for the worker's background load
                moved = await self.write_batch()
            except Exception as exc:
                failures += 1
                delay = min(MAX_BACKOFF_SECS, self.interval * 2**failures)
                log.warning("memory_writer_failed", error=str(exc), retry_in_secs=delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if moved < self.batch:  # a full batch: more may be waiting, go on at once
                await asyncio.sleep(self.interval)

    async def write_batch(self) -> int:
        """Embed one batch of queued memories and move it into `memories`; how many moved."""
        async with self.memory.engine.begin() as conn:
            pending = await memory_outbox.claim(conn, self.batch)
            if not pending:
                return 0
            metrics.record_embedding_batch("outbox", len(pending))
            vecs = await self.memory.embedder.encode([p.text for p in pending])
            await memories.insert_many(conn, [
                {"user_id": p.user_id, "text": p.text, "metadata": p.metadata, "task_id": p.task_id,
                 "step_index": None, "embedding": vec, "source_key": p.source_key}
                for p, vec in zip(pending, vecs, strict=True)
            ])
            await memory_outbox.delete(conn, [p.id for p in pending])
        await self.memory.sync(force=True)  # searchable in this process at once
        metrics.MEMORIES_WRITTEN.inc(len(pending))
        log.info("memories_written", count=len(pending))
        return len(pending)


def start_memory_writer(memory: MemoryService, settings: Settings) -> asyncio.Task[None]:
    return asyncio.create_task(MemoryWriter(memory, settings).run(), name="memory-writer")


async def stop_memory_writer(task: asyncio.Task[None]) -> None:
    """Cancel it: a batch in flight rolls back and stays queued for the next writer."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
