"""Short-term memory of one task: ordered entries (step outputs, tool results, notes) that
later steps of the same task read. A step's prompt gets a bounded window of the newest
entries; older ones are dropped first. Entries expire after ORCH_SHORT_TERM_TTL_HOURS."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from durable_orchestrator.data import short_term

KINDS = frozenset({"output", "tool_result", "note"})


@dataclass
class Entry:
    step_index: int | None
    kind: str
    content: str


def entry(
    *, kind: str, content: str, ttl_hours: float, dedupe_key: str, labels: list[str] | None = None
) -> short_term.NewEntry:
    """`dedupe_key` is unique within the task (e.g. "output:2"): writing it again is a no-op.
    `labels`: what the content was made from ("private", "untrusted"; tools/provenance.py)."""
    if kind not in KINDS:
        raise ValueError(f"unknown short-term memory kind {kind!r}")
    return short_term.NewEntry(kind, content, timedelta(hours=ttl_hours), dedupe_key, labels or [])


async def add_entry(
    conn: AsyncConnection,
    *,
    task_id: str,
    step_index: int | None,
    kind: str,
    content: str,
    ttl_hours: float,
    dedupe_key: str,
    labels: list[str] | None = None,
) -> None:
    await short_term.add(
        conn, task_id, step_index,
        entry(kind=kind, content=content, ttl_hours=ttl_hours, dedupe_key=dedupe_key, labels=labels),
    )


def fit(newest_first: Iterable[Iterable[Any]], max_chars: int) -> list[Entry]:
    """Entries, given newest first as (step_index, kind, content), kept until `max_chars` is
    reached and returned oldest first. An entry that does not fit whole is cut from its start."""
    kept: list[Entry] = []
    budget = max_chars
    for step_index, kind, content in newest_first:
        if budget <= 0:
            break
        if len(content) > budget:
            if budget <= 20:  # not worth a fragment
                break
            content = "[…] " + content[len(content) - (budget - 4) :]
        kept.append(Entry(step_index, kind, content))
        budget -= len(content)
    return list(reversed(kept))


def render(entries: list[Entry]) -> str:
    lines = []
    for e in entries:
        who = "task" if e.step_index is None else f"step {e.step_index}"
        lines.append(f"- [{who} · {e.kind}] {e.content}")
    return "\n".join(lines)
