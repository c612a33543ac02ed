"""Reads and writes of `short_term_memory`: what the steps of one task leave for each other.
What may be written and how much of it a step sees is decided in memory/short_term.py."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import ShortTermEntry

# The newest entries read for a window; the window itself is bounded by characters and keeps
# fewer.
WINDOW_ROWS = 200

_ADD = (
    pg_insert(ShortTermEntry)
    .values({
        ShortTermEntry.task_id: sa.bindparam("task_id"),
        ShortTermEntry.step_index: sa.bindparam("step_index"),
        ShortTermEntry.kind: sa.bindparam("kind"),
        ShortTermEntry.content: sa.bindparam("content"),
        ShortTermEntry.expires_at: sa.func.now() + sa.bindparam("ttl", type_=sa.Interval),
        ShortTermEntry.dedupe_key: sa.bindparam("dedupe_key"),
        ShortTermEntry.labels: sa.bindparam("labels", type_=ARRAY(sa.Text)),
    })
    .on_conflict_do_nothing(index_elements=[ShortTermEntry.dedupe_key])
)

_NEWEST = (
    sa.select(ShortTermEntry.step_index, ShortTermEntry.kind, ShortTermEntry.content)
    .where(
        ShortTermEntry.task_id == sa.bindparam("task_id"),
        ShortTermEntry.expires_at > sa.func.now(),
        ShortTermEntry.step_index.is_distinct_from(sa.bindparam("exclude_step")),
        sa.not_(sa.and_(
            ShortTermEntry.kind == "output",
            ShortTermEntry.step_index == sa.any_(sa.bindparam("exclude_outputs_of", type_=ARRAY(sa.Integer))),
        )),
    )
    .order_by(ShortTermEntry.id.desc())
    .limit(WINDOW_ROWS)
)


async def add(
    conn: AsyncConnection,
    *,
    task_id: str,
    step_index: int | None,
    kind: str,
    content: str,
    ttl: timedelta,
    dedupe_key: str,
    labels: list[str] | None = None,
) -> None:
    """One entry, expiring `ttl` from now by the database clock; a second write with the same
    `dedupe_key` (a retried activity) is a no-op. `labels`: its provenance (data/provenance.py)."""
    await conn.execute(_ADD, {
        "task_id": task_id, "step_index": step_index, "kind": kind, "content": content,
        "ttl": ttl, "dedupe_key": dedupe_key, "labels": labels or [],
    })


async def newest(
    engine: AsyncEngine | AsyncConnection,
    task_id: str,
    *,
    exclude_step: int | None,
    exclude_outputs_of: list[int],
) -> list[Any]:
    """The task's live entries, newest first, as (step_index, kind, content) rows: without the
    entries of `exclude_step` and without the outputs of the steps in `exclude_outputs_of`."""
    async with contextlib.AsyncExitStack() as stack:
        # An engine: a connection of its own; a connection: the caller's (and its transaction).
        conn = engine if isinstance(engine, AsyncConnection) else await stack.enter_async_context(read(engine))
        rows = await conn.execute(_NEWEST, {
            "task_id": task_id, "exclude_step": exclude_step, "exclude_outputs_of": exclude_outputs_of,
        })
        return list(rows.all())
