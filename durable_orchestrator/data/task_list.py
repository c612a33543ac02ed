"""GET /tasks: keyset pagination over (created_at DESC, id DESC), own tasks only.

The cursor is the last row's (created_at, id) as `<epoch microseconds>_<id>`. Keyset paging
stays O(page) however deep the client goes and never repeats or skips a row when new tasks
arrive between pages (they sort before the cursor)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam, func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from durable_orchestrator.data.tables import Task


class BadCursor(ValueError):
    pass


# `<created_at as microseconds since the epoch>_<task id>`: every string of this shape is a
# position in the keyset, so the OpenAPI pattern says exactly which cursors are accepted.
CURSOR_PATTERN = r"^[0-9]{1,17}_[0-9a-f]{32}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(created_at: datetime, task_id: str) -> str:
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{task_id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    if not _CURSOR.fullmatch(cursor):
        raise BadCursor(f"cursor must match {CURSOR_PATTERN} (the `next_cursor` of a page)")
    micros, task_id = cursor.split("_")
    return _EPOCH + timedelta(microseconds=int(micros)), task_id


_PAGE = (
    select(
        Task.id,
        Task.status,
        func.left(Task.description, 200).label("description"),
        Task.meta.label("metadata"),
        Task.workflow_id,
        Task.created_at,
        Task.updated_at,
    )
    .where(Task.user_id == bindparam("user"))
    .order_by(Task.created_at.desc(), Task.id.desc())
    .limit(bindparam("limit"))
)


async def list_tasks(
    engine: AsyncEngine, user_id: str, *, status: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    query = _PAGE
    if status:
        query = query.where(Task.status == status)
    if cursor:
        query = query.where(sa.tuple_(Task.created_at, Task.id) < sa.tuple_(*decode_cursor(cursor)))
    async with engine.connect() as conn:
        result = await conn.execute(query, {"user": user_id, "limit": limit + 1})
        rows = [dict(r) for r in result.mappings()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return rows, next_cursor
