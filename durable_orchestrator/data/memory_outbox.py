"""Reads and writes of `memory_outbox`: memories written but not embedded yet.

A completed task's result lands here in the transaction that marks the task completed, so the
task never waits on an embedding and a crash after it loses nothing. A worker's memory writer
(memory/writer.py) claims rows with `FOR UPDATE SKIP LOCKED` (several workers share the work;
a claim lasts as long as the claiming transaction, so a crashed worker's claim is released by
PostgreSQL), embeds them, inserts them into `memories` and deletes them in that transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from durable_orchestrator.data.tables import MemoryOutboxEntry as Entry


@dataclass(frozen=True)
class Pending:
    id: int
    user_id: str
    text: str
    metadata: dict[str, Any]
    task_id: str | None
    source_key: str


def result_source_key(task_id: str) -> str:
    """One memory per task result, however many times the task's finish runs."""
    return f"task-result:{task_id}"


_ADD = (
    pg_insert(Entry)
    .values({
        Entry.user_id: sa.bindparam("user_id"),
        Entry.text: sa.bindparam("text"),
        Entry.meta: sa.bindparam("metadata"),
        Entry.task_id: sa.bindparam("task_id"),
        Entry.source_key: sa.bindparam("source_key"),
    })
    .on_conflict_do_nothing(index_elements=[Entry.source_key])
)


def queue_from(rows: sa.Select) -> sa.CTE:
    """Queue the memories `rows` select (user_id, text, metadata, task_id, source_key), as a
    CTE for the statement that decides them; a repeat of a `source_key` adds nothing."""
    return (
        pg_insert(Entry)
        .from_select([Entry.user_id, Entry.text, Entry.meta, Entry.task_id, Entry.source_key], rows)
        .on_conflict_do_nothing(index_elements=[Entry.source_key])
        .returning(Entry.id)
        .cte("queued")
    )


# Oldest first, so a backlog drains in the order tasks finished.
_CLAIM = (
    sa.select(Entry.id, Entry.user_id, Entry.text, Entry.meta.label("meta"), Entry.task_id, Entry.source_key)
    .order_by(Entry.id)
    .limit(sa.bindparam("limit"))
    .with_for_update(skip_locked=True)
)

_DELETE = sa.delete(Entry).where(Entry.id == sa.any_(sa.bindparam("ids", type_=ARRAY(sa.BigInteger))))


async def add(
    conn: AsyncConnection,
    *,
    user_id: str,
    text: str,
    metadata: dict[str, Any],
    task_id: str | None,
    source_key: str,
) -> None:
    """Queue a memory for embedding; a repeat of the same `source_key` adds nothing."""
    await conn.execute(_ADD, {
        "user_id": user_id, "text": text, "metadata": metadata, "task_id": task_id,
        "source_key": source_key,
    })


async def claim(conn: AsyncConnection, limit: int) -> list[Pending]:
    """Lock up to `limit` rows no other transaction holds, for as long as `conn`'s transaction."""
    rows = (await conn.execute(_CLAIM, {"limit": limit})).all()
    return [Pending(r.id, r.user_id, r.text, r.meta, r.task_id, r.source_key) for r in rows]


async def delete(conn: AsyncConnection, ids: list[int]) -> None:
    await conn.execute(_DELETE, {"ids": ids})
