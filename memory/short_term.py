"""Short-term memory of one task: ordered entries (step outputs, tool results, notes) that
later steps of the same task read. A step's prompt gets a bounded window of the newest
entries; older ones are dropped first. Entries expire after ORCH_SHORT_TERM_TTL_HOURS."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from durable_orchestrator.data.engine import read

KINDS = frozenset({"output", "tool_result", "note"})


@dataclass
class Entry:
    step_index: int | None
    kind: str
    content: str


async def add_entry(
    conn: AsyncConnection,
    *,
    task_id: str,
    step_index: int | None,
    kind: str,
    content: str,
    ttl_hours: float,
    dedupe_key: str,
) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown short-term memory kind {kind!r}")
    await conn.execute(
        sa.text(
            "INSERT INTO short_term_memory (task_id, step_index, kind, content, expires_at, "
            "dedupe_key) VALUES (:t, :s, :k, :c, now() + make_interval(secs => :ttl), :d) "
            "ON CONFLICT (dedupe_key) DO NOTHING"
        ),
        {
            "t": task_id,
            "s": step_index,
            "k": kind,
            "c": content,
            "ttl": ttl_hours * 3600.0,
            "d": f"{task_id}:{dedupe_key}",
        },
    )


async def window(
    engine: AsyncEngine | AsyncConnection,
    task_id: str,
    *,
    exclude_step: int | None,
    exclude_outputs_of: list[int],
    max_chars: int,
) -> list[Entry]:
    """Newest entries first until `max_chars` is reached, returned oldest first.

    The reading step's own entries and the outputs of its dependencies (already in its
    prompt) are left out. An entry that does not fit whole is cut from its start."""
    async with contextlib.AsyncExitStack() as stack:
        # An engine: a connection of its own; a connection: the caller's (and its transaction).
        conn = engine if isinstance(engine, AsyncConnection) else await stack.enter_async_context(read(engine))
        rows = await conn.execute(
            sa.text(
                "SELECT step_index, kind, content FROM short_term_memory WHERE task_id=:t "
                "AND expires_at > now() AND step_index IS DISTINCT FROM :s "
                "AND NOT (kind = 'output' AND step_index = ANY(:deps)) "
                "ORDER BY id DESC LIMIT 200"
            ),
            {"t": task_id, "s": exclude_step, "deps": exclude_outputs_of},
        )
        newest_first = [Entry(r.step_index, r.kind, r.content) for r in rows]
    kept: list[Entry] = []
    budget = max_chars
    for entry in newest_first:
        if budget <= 0:
            break
        content = entry.content
        if len(content) > budget:
            if budget <= 20:  # not worth a fragment
                break
            content = "[…] " + content[len(content) - (budget - 4) :]
        kept.append(Entry(entry.step_index, entry.kind, content))
        budget -= len(content)
    return list(reversed(kept))


def render(entries: list[Entry]) -> str:
    lines = []
    for e in entries:
        who = "task" if e.step_index is None else f"step {e.step_index}"
        lines.append(f"- [{who} · {e.kind}] {e.content}")
    return "\n".join(lines)
