"""Reads and writes of `short_term_memory`: what the steps of one task leave for each other.
What may be written and how much of it a step sees is decided in memory/short_term.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSON, aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from durable_orchestrator.data.tables import ShortTermEntry

# The newest entries read for a window; the window itself is bounded by characters and keeps
# fewer.
WINDOW_ROWS = 200

# Parameters not named like columns, so the statement can carry another table's UPDATE
# (data/steps.py): SQLAlchemy would read `task_id` as a value for that UPDATE to SET.
ADD = (
    pg_insert(ShortTermEntry)
    .values({
        ShortTermEntry.task_id: sa.bindparam("entry_task"),
        ShortTermEntry.step_index: sa.bindparam("entry_step"),
        ShortTermEntry.kind: sa.bindparam("entry_kind"),
        ShortTermEntry.content: sa.bindparam("entry_content"),
        ShortTermEntry.expires_at: sa.func.now() + sa.bindparam("entry_ttl", type_=sa.Interval),
        ShortTermEntry.dedupe_key: sa.bindparam("entry_key"),
        ShortTermEntry.labels: sa.bindparam("entry_labels", type_=ARRAY(sa.Text)),
    })
    .on_conflict_do_nothing(index_elements=[ShortTermEntry.dedupe_key])
)

# The task's live entries, newest first: without the entries of `exclude_step` and without the
# outputs of the steps in `exclude_outputs_of`.
_NEWEST = (
    sa.select(ShortTermEntry.step_index, ShortTermEntry.kind, ShortTermEntry.content)
    .where(
        ShortTermEntry.task_id == sa.bindparam("task"),
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


_NEWEST_ROWS = _NEWEST.add_columns(ShortTermEntry.id).subquery("newest")
#: Those entries as one value, [[step_index, kind, content], ...] newest first, NULL when
#: none: for a statement that reads them beside something else (data/steps.py).
NEWEST_AS_JSON = (
    sa.select(sa.func.json_agg(aggregate_order_by(
        sa.func.json_build_array(_NEWEST_ROWS.c.step_index, _NEWEST_ROWS.c.kind, _NEWEST_ROWS.c.content),
        _NEWEST_ROWS.c.id.desc(),
    ), type_=JSON))
    .scalar_subquery()
)


@dataclass
class NewEntry:
    """An entry to write: it expires `ttl` from now by the database clock; a second write with
    the same `dedupe_key` within the task (a retried activity) is a no-op. `labels`: its
    provenance (data/provenance.py)."""

    kind: str
    content: str
    ttl: timedelta
    dedupe_key: str
    labels: list[str] = field(default_factory=list)

    def params(self, task_id: str, step_index: int | None) -> dict[str, Any]:
        """`ADD`'s parameters, for this module's `add` or a statement that carries `ADD`."""
        return {
            "entry_task": task_id, "entry_step": step_index, "entry_kind": self.kind,
            "entry_content": self.content, "entry_ttl": self.ttl,
            "entry_key": f"{task_id}:{self.dedupe_key}", "entry_labels": self.labels,
        }


async def add(conn: AsyncConnection, task_id: str, step_index: int | None, entry: NewEntry) -> None:
    await conn.execute(ADD, entry.params(task_id, step_index))


def newest_params(task_id: str, *, exclude_step: int | None, exclude_outputs_of: list[int]) -> dict[str, Any]:
    """`NEWEST_AS_JSON`'s parameters."""
    return {"task": task_id, "exclude_step": exclude_step, "exclude_outputs_of": exclude_outputs_of}
