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
from sqlalchemy.ext.asyncio import AsyncEngine


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


async def list_tasks(
    engine: AsyncEngine, user_id: str, *, status: str | None, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    where = ["user_id = :u"]
    params: dict[str, Any] = {"u": user_id, "n": limit + 1}
    if status:
        where.append("status = :s")
        params["s"] = status
    if cursor:
        params["ca"], params["cid"] = decode_cursor(cursor)
        where.append("(created_at, id) < (:ca, :cid)")
    query = sa.text(
        "SELECT id, status, left(description, 200) AS description, metadata, workflow_id, "
        f"created_at, updated_at FROM tasks WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, id DESC LIMIT :n"
    )
    async with engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(query, params)).mappings()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return rows, next_cursor
