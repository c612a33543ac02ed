"""GET /tasks: keyset pagination over (created_at DESC, id DESC), own tasks only.

The cursor is opaque to clients: base64url of the last row's (created_at, id). Keyset paging
stays O(page) however deep the client goes and never repeats or skips a row when new tasks
arrive between pages (they sort before the cursor)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam, func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from durable_orchestrator.data.tables import Task


class BadCursor(ValueError):
    pass


def encode_cursor(created_at: datetime, task_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), task_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, task_id = json.loads(raw)
        created = datetime.fromisoformat(ts)
        if not isinstance(task_id, str) or created.tzinfo is None or "\x00" in task_id:
            raise ValueError
        task_id.encode("utf-8")
        return created, task_id
    except Exception as exc:  # any malformed input is the client's problem, not a 500
        raise BadCursor("cursor is not one this API returned") from exc


_PAGE = (
    select(
        Task.id, Task.status, func.left(Task.description, 200).label("description"),
        Task.meta.label("metadata"), Task.workflow_id, Task.created_at, Task.updated_at,
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
