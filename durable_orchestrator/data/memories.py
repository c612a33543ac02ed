"""Reads and writes of the `memories` table: the truth the FAISS cache is built from.

Embeddings are stored as float32 bytes (384 x 4 = 1536 bytes for MiniLM). Deletion is soft
(`deleted_at`), so every process's cache can learn about it from one indexed query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


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
        "u": user_id, "t": text, "m": json.dumps(metadata or {}), "task": task_id,
        "s": step_index, "e": to_bytes(embedding), "k": source_key,
    }
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO memories (user_id, text, metadata, task_id, step_index, embedding, source_key) "
                "VALUES (:u, :t, CAST(:m AS jsonb), :task, :s, :e, :k) "
                "ON CONFLICT (source_key) DO NOTHING RETURNING id"
            ),
            params,
        )
    ).first()
    if row is not None:
        return int(row.id)
    existing = (
        await conn.execute(sa.text("SELECT id FROM memories WHERE source_key=:k"), {"k": source_key})
    ).one()
    return int(existing.id)


async def soft_delete(engine: AsyncEngine, user_id: str, memory_id: int) -> bool:
    """True when the caller's live memory existed and is now deleted."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "UPDATE memories SET deleted_at = clock_timestamp() "
                    "WHERE id=:id AND user_id=:u AND deleted_at IS NULL RETURNING id"
                ),
                {"id": memory_id, "u": user_id},
            )
        ).first()
    return row is not None


async def fetch_new(
    conn: AsyncConnection, after_id: int, gaps: list[int], limit: int
) -> list[Any]:
    """Rows with id > after_id (in id order, at most `limit`) plus the rows of the gap ids that
    have committed since. Deleted rows come back without their embedding."""
    return list(
        (
            await conn.execute(
                sa.text(
                    "SELECT id, user_id, CASE WHEN deleted_at IS NULL THEN embedding END AS embedding, "
                    "created_at > now() - interval '60 seconds' AS recent "
                    "FROM memories WHERE id > :w OR id = ANY(:gaps) ORDER BY id LIMIT :n"
                ),
                {"w": after_id, "gaps": gaps, "n": limit},
            )
        ).all()
    )


async def fetch_deletions(conn: AsyncConnection, since: datetime, overlap_secs: float) -> list[Any]:
    """(id, user_id) of rows deleted after `since` minus an overlap that covers deletes whose
    transaction committed late (re-reading a deletion is harmless)."""
    rows = (
        await conn.execute(
            sa.text(
                "SELECT id, user_id FROM memories "
                "WHERE deleted_at IS NOT NULL AND deleted_at > CAST(:s AS timestamptz) - make_interval(secs => CAST(:o AS double precision))"
            ),
            {"s": since, "o": overlap_secs},
        )
    ).all()
    return list(rows)


async def max_id(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.text("SELECT COALESCE(max(id), 0) FROM memories"))).scalar_one())


async def hydrate(engine: AsyncEngine, user_id: str, ids: list[int]) -> dict[int, MemoryRow]:
    if not ids:
        return {}
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT id, text, metadata, task_id, step_index FROM memories "
                    "WHERE id = ANY(:ids) AND user_id=:u AND deleted_at IS NULL"
                ),
                {"ids": ids, "u": user_id},
            )
        ).all()
    return {r.id: MemoryRow(r.id, r.text, r.metadata, r.task_id, r.step_index) for r in rows}


async def filtered_candidates(
    engine: AsyncEngine, user_id: str, filter_: dict[str, Any]
) -> list[int]:
    """Ids of the user's live memories whose metadata contains `filter_` (JSONB @>, GIN)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT id FROM memories WHERE user_id=:u AND deleted_at IS NULL "
                    "AND metadata @> CAST(:f AS jsonb)"
                ),
                {"u": user_id, "f": json.dumps(filter_)},
            )
        ).all()
    return [r.id for r in rows]
