"""Reads and writes of the `memories` table: the truth the FAISS cache is built from.

Embeddings are stored as float32 bytes (384 x 4 = 1536 bytes for MiniLM). Deletion is soft
(`deleted_at`), so every process's cache can learn about it from one indexed query.

The statements are built once, here, with named bind parameters: every search and catch-up
runs the same few statements, so SQLAlchemy's compiled cache and asyncpg's prepared-statement
cache both hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, OID, REGCLASS
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import Memory

# A row created this recently may sit next to ids whose transactions have not committed yet
# (the cache re-checks such gaps for as long).
RECENT = timedelta(seconds=60)


@dataclass
class MemoryRow:
    id: int
    text: str
    metadata: dict[str, Any]
    task_id: str | None
    step_index: int | None


def to_bytes(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype="<f4").tobytes()


def from_bytes(blobs: list[bytes], dim: int | None = None) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1).astype(np.float32)


def _ids(name: str) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=ARRAY(sa.BigInteger))


_live = Memory.deleted_at.is_(None)

# Without RETURNING, so a batch is one executemany; a source key already present adds nothing.
_INSERT_MANY = (
    pg_insert(Memory)
    .values({
        Memory.user_id: sa.bindparam("user_id"),
        Memory.text: sa.bindparam("text"),
        Memory.meta: sa.bindparam("metadata"),
        Memory.task_id: sa.bindparam("task_id"),
        Memory.step_index: sa.bindparam("step_index"),
        Memory.embedding: sa.bindparam("embedding"),
        Memory.source_key: sa.bindparam("source_key"),
    })
    .on_conflict_do_nothing(index_elements=[Memory.source_key])
)
_INSERT = _INSERT_MANY.returning(Memory.id)
_ID_BY_SOURCE_KEY = sa.select(Memory.id).where(Memory.source_key == sa.bindparam("source_key"))

_SOFT_DELETE = (
    sa.update(Memory)
    # bind names unlike the columns': an UPDATE reserves those for its SET clause
    .where(Memory.id == sa.bindparam("memory_id"), Memory.user_id == sa.bindparam("owner"), _live)
    .values(deleted_at=sa.func.clock_timestamp())
    .returning(Memory.id)
)

_NEW_COLUMNS = (
    Memory.id,
    Memory.user_id,
    sa.case((_live, Memory.embedding)).label("embedding"),
    (Memory.created_at > sa.func.now() - RECENT).label("recent"),
)
# Two index range scans glued together, not one `id > :after OR id = ANY(:gaps)`: a prepared
# statement soon gets PostgreSQL's generic plan, and for the OR that plan walks the whole
# primary key (57 ms per catch-up at 100k rows, against 0.07 ms). Gaps lie below the
# watermark, so the two halves never share a row.
_PAST_WATERMARK = (
    sa.select(*_NEW_COLUMNS)
    .where(Memory.id > sa.bindparam("after_id"))
    .order_by(Memory.id)
    .limit(sa.bindparam("limit"))
)
_COMMITTED_GAPS = sa.select(*_NEW_COLUMNS).where(Memory.id == sa.any_(_ids("gaps")))
_new_rows = sa.union_all(_PAST_WATERMARK, _COMMITTED_GAPS).subquery("new_rows")
_NEW_ROWS = sa.select(_new_rows).order_by(_new_rows.c.id).limit(sa.bindparam("limit"))

# `IS NOT NULL` lets the partial index on deleted_at answer it.
_DELETED_SINCE = sa.select(Memory.id, Memory.user_id).where(
    Memory.deleted_at.is_not(None), Memory.deleted_at > sa.bindparam("after")
)

_MAX_ID = sa.select(sa.func.coalesce(sa.func.max(Memory.id), 0))

_CLOCK = sa.select(sa.func.clock_timestamp())

# Labelled: a row from a Core connection is keyed by column name (`metadata`), not attribute.
_HYDRATE = sa.select(
    Memory.id, Memory.text, Memory.meta.label("meta"), Memory.task_id, Memory.step_index
).where(
    Memory.id == sa.any_(_ids("ids")), Memory.user_id == sa.bindparam("user_id"), _live
)

_FILTERED = sa.select(Memory.id).where(
    Memory.user_id == sa.bindparam("user_id"), _live, Memory.meta.contains(sa.bindparam("filter"))
)

_pg_database = sa.table("pg_database", sa.column("oid"), sa.column("datname"))
_DATABASE_NAMES = sa.select(
    sa.func.current_database().label("db"),
    sa.cast(sa.cast(sa.literal(Memory.__tablename__), REGCLASS), OID).label("rel"),
    sa.select(_pg_database.c.oid)
    .where(_pg_database.c.datname == sa.func.current_database())
    .scalar_subquery()
    .label("dbo"),
)
_SYSTEM_IDENTIFIER = sa.select(sa.func.pg_control_system().table_valued("system_identifier").c.system_identifier)


async def insert(
    conn: AsyncConnection,
    *,
    user_id: str,
    text: str,
    embedding: np.ndarray,
    metadata: dict[str, Any] | None = None,
    task_id: str | None = None,
    step_index: int | None = None,
    source_key: str | None = None,
) -> int:
    """Insert one memory; with a `source_key` a repeat (a retried activity) returns the first
    row's id instead of adding another."""
    params = {
        "user_id": user_id, "text": text, "metadata": metadata or {}, "task_id": task_id,
        "step_index": step_index, "embedding": to_bytes(embedding), "source_key": source_key,
    }
    memory_id = (await conn.execute(_INSERT, params)).scalar()
    if memory_id is not None:
        return int(memory_id)
    return int((await conn.execute(_ID_BY_SOURCE_KEY, {"source_key": source_key})).scalar_one())


async def insert_many(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Insert several memories in one round trip; each dict has `insert`'s keyword arguments
    (all of them). Rows whose `source_key` is already stored are skipped."""
    if not rows:
        return
    await conn.execute(_INSERT_MANY, [{**r, "embedding": to_bytes(r["embedding"])} for r in rows])


async def soft_delete(engine: AsyncEngine, user_id: str, memory_id: int) -> bool:
    """True when the caller's live memory existed and is now deleted."""
    async with engine.begin() as conn:
        row = (await conn.execute(_SOFT_DELETE, {"memory_id": memory_id, "owner": user_id})).first()
    return row is not None


async def clock(conn: AsyncConnection) -> datetime:
    """The database's wall clock now (not the start of the transaction)."""
    return (await conn.execute(_CLOCK)).scalar_one()


async def fetch_new(
    conn: AsyncConnection, after_id: int, gaps: list[int], limit: int
) -> list[Any]:
    """Rows with id > after_id (in id order, at most `limit`) plus the rows of the gap ids that
    have committed since: (id, user_id, embedding, recent). Deleted rows come back without
    their embedding."""
    return list((await conn.execute(_NEW_ROWS, {"after_id": after_id, "gaps": gaps, "limit": limit})).all())


async def fetch_deletions(conn: AsyncConnection, since: datetime, overlap_secs: float) -> list[Any]:
    """(id, user_id) of rows deleted after `since` minus an overlap that covers deletes whose
    transaction committed late (re-reading a deletion is harmless)."""
    after = since - timedelta(seconds=overlap_secs)
    return list((await conn.execute(_DELETED_SINCE, {"after": after})).all())


async def max_id(conn: AsyncConnection) -> int:
    return int((await conn.execute(_MAX_ID)).scalar_one())


async def database_identity(engine: AsyncEngine) -> str:
    """Which database this is (cluster, database, and the `memories` table itself), so a
    snapshot of the cache built from another one is recognised as worthless."""
    async with engine.connect() as conn:
        names = (await conn.execute(_DATABASE_NAMES)).one()
        try:
            async with conn.begin_nested():
                system_id = (await conn.execute(_SYSTEM_IDENTIFIER)).scalar()
        except Exception:  # not allowed for this role: the names are still a good key
            system_id = None
    return f"{system_id}:{names.db}:{names.dbo}:{names.rel}"


async def hydrate(engine: AsyncEngine, user_id: str, ids: list[int]) -> dict[int, MemoryRow]:
    if not ids:
        return {}
    async with read(engine) as conn:
        rows = (await conn.execute(_HYDRATE, {"ids": ids, "user_id": user_id})).all()
    return {r.id: MemoryRow(r.id, r.text, r.meta, r.task_id, r.step_index) for r in rows}


async def filtered_candidates(
    engine: AsyncEngine, user_id: str, filter_: dict[str, Any]
) -> list[int]:
    """Ids of the user's live memories whose metadata contains `filter_` (JSONB @>, GIN)."""
    async with read(engine) as conn:
        rows = await conn.execute(_FILTERED, {"user_id": user_id, "filter": filter_})
        return list(rows.scalars())
