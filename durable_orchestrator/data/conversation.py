"""Reads and writes of tool calls and of the tool-calling conversation of a step.

Only steps whose model asks for tools store a conversation (step_messages); a step answered
in one call writes nothing here. Tool results live in tool_calls and are spliced back into
the conversation after the assistant message that requested them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from durable_orchestrator.data.tasks import add_event

FINAL = frozenset({"succeeded", "failed", "rejected"})


@dataclass
class NewCall:
    seq: int
    call_id: str
    tool: str
    arguments: str
    status: str  # validated | rejected | awaiting_approval
    error: str | None = None
    approval_id: str | None = None
    timeout_secs: float = 10.0


def assistant_message(content: str | None, calls: list[NewCall]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {"id": c.call_id, "type": "function", "function": {"name": c.tool, "arguments": c.arguments}}
            for c in calls
        ],
    }


async def save_turn(
    conn: AsyncConnection,
    *,
    task_id: str,
    step_index: int,
    turn: int,
    prompt: list[dict[str, Any]] | None,
    assistant: dict[str, Any],
    calls: list[NewCall],
) -> None:
    """The assistant's tool-call message and its calls, in the caller's transaction.
    `prompt` (system + user) is stored with turn 0 so later turns replay the same prompt."""
    messages = [*(prompt or []), assistant]
    for seq, message in enumerate(messages):
        await conn.execute(
            sa.text(
                "INSERT INTO step_messages (task_id, step_index, turn, seq, message) "
                "VALUES (:t, :s, :turn, :seq, CAST(:m AS jsonb)) ON CONFLICT DO NOTHING"
            ),
            {"t": task_id, "s": step_index, "turn": turn, "seq": seq, "m": json.dumps(message)},
        )
    for c in calls:
        await conn.execute(
            sa.text(
                "INSERT INTO tool_calls (task_id, step_index, turn, seq, call_id, tool, arguments, "
                "status, error, requires_approval, approval_id, finished_at) VALUES (:t, :s, :turn, "
                ":seq, :cid, :tool, :args, :st, :err, :ra, :aid, "
                "CASE WHEN :st = 'rejected' THEN now() END) ON CONFLICT DO NOTHING"
            ),
            {
                "t": task_id, "s": step_index, "turn": turn, "seq": c.seq, "cid": c.call_id,
                "tool": c.tool, "args": c.arguments, "st": c.status, "err": c.error,
                "ra": c.approval_id is not None, "aid": c.approval_id,
            },
        )
    pending = [c for c in calls if c.status == "awaiting_approval"]
    if pending:
        await conn.execute(
            sa.text(
                "UPDATE tasks SET status='waiting_approval', updated_at=now() WHERE id=:t "
                "AND status NOT IN ('completed','failed','cancelled')"
            ),
            {"t": task_id},
        )
        await conn.execute(
            sa.text("UPDATE steps SET status='waiting_approval' WHERE task_id=:t AND index=:i "
                    "AND status IN ('pending','running')"),
            {"t": task_id, "i": step_index},
        )
        for c in pending:
            await add_event(
                conn, task_id, "approval.requested",
                {"approval_id": c.approval_id, "step": step_index, "tool": c.tool},
                f"approval:{c.approval_id}:requested",
            )


async def saved_turn(engine: AsyncEngine, task_id: str, step_index: int, turn: int) -> list[NewCall] | None:
    """The calls an earlier attempt of this turn committed, or None if it committed nothing."""
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                sa.text("SELECT 1 FROM step_messages WHERE task_id=:t AND step_index=:s AND turn=:turn LIMIT 1"),
                {"t": task_id, "s": step_index, "turn": turn},
            )
        ).first()
        if stored is None:
            return None
        rows = await conn.execute(
            sa.text(
                "SELECT seq, call_id, tool, arguments, status, error, approval_id FROM tool_calls "
                "WHERE task_id=:t AND step_index=:s AND turn=:turn ORDER BY seq"
            ),
            {"t": task_id, "s": step_index, "turn": turn},
        )
        return [
            NewCall(r.seq, r.call_id, r.tool, r.arguments,
                    "awaiting_approval" if r.approval_id else ("rejected" if r.status == "rejected" else "validated"),
                    r.error, r.approval_id)
            for r in rows
        ]


def tool_message(call_id: str, status: str, result: str | None, error: str | None) -> dict[str, Any]:
    if status == "succeeded":
        content = result or ""
    elif status == "failed":
        content = f"error: {error}"
    else:
        content = error or result or status
    return {"role": "tool", "tool_call_id": call_id, "content": content}


async def conversation(engine: AsyncEngine, task_id: str, step_index: int) -> list[dict[str, Any]]:
    """The step's conversation so far: stored messages with tool results after each turn."""
    async with engine.connect() as conn:
        msgs = (
            await conn.execute(
                sa.text("SELECT turn, message FROM step_messages WHERE task_id=:t AND step_index=:s "
                        "ORDER BY turn, seq"),
                {"t": task_id, "s": step_index},
            )
        ).all()
        calls = (
            await conn.execute(
                sa.text("SELECT turn, call_id, status, result, error FROM tool_calls "
                        "WHERE task_id=:t AND step_index=:s ORDER BY turn, seq"),
                {"t": task_id, "s": step_index},
            )
        ).all()
    by_turn: dict[int, list[dict[str, Any]]] = {}
    for c in calls:
        by_turn.setdefault(c.turn, []).append(tool_message(c.call_id, c.status, c.result, c.error))
    out: list[dict[str, Any]] = []
    turns = sorted({m.turn for m in msgs})
    for turn in turns:
        out += [m.message if isinstance(m.message, dict) else json.loads(m.message)
                for m in msgs if m.turn == turn]
        out += by_turn.get(turn, [])
    return out


@dataclass
class CallRow:
    task_id: str
    user_id: str
    agent: str
    step_index: int
    turn: int
    seq: int
    call_id: str
    tool: str
    arguments: str
    status: str
    result: str | None
    error: str | None
    approval_id: str | None


async def load_call(engine: AsyncEngine, task_id: str, step_index: int, turn: int, seq: int) -> CallRow:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT c.task_id, t.user_id, s.agent, c.step_index, c.turn, c.seq, c.call_id, "
                    "c.tool, c.arguments, c.status, c.result, c.error, c.approval_id "
                    "FROM tool_calls c JOIN tasks t ON t.id = c.task_id "
                    "JOIN steps s ON s.task_id = c.task_id AND s.index = c.step_index "
                    "WHERE c.task_id=:t AND c.step_index=:s AND c.turn=:turn AND c.seq=:seq"
                ),
                {"t": task_id, "s": step_index, "turn": turn, "seq": seq},
            )
        ).first()
    if row is None:
        raise LookupError(f"tool call {task_id}/{step_index}/{turn}/{seq} does not exist")
    return CallRow(*row)


async def finish_call(
    conn: AsyncConnection,
    row: CallRow,
    *,
    status: str,
    result: str | None = None,
    error: str | None = None,
    latency_ms: int | None = None,
    decision: str | None = None,
    comment: str | None = None,
    decided_by: str | None = None,
) -> None:
    await conn.execute(
        sa.text(
            "UPDATE tool_calls SET status=:st, result=:r, error=:e, latency_ms=:l, finished_at=now(), "
            "decision=COALESCE(:d, decision), decision_comment=COALESCE(:dc, decision_comment), "
            "decided_by=COALESCE(:db, decided_by), "
            "decided_at=CASE WHEN :d IS NOT NULL THEN COALESCE(decided_at, now()) ELSE decided_at END "
            "WHERE task_id=:t AND step_index=:s AND turn=:turn AND seq=:seq "
            "AND status NOT IN ('succeeded','failed','rejected')"
        ),
        {
            "st": status, "r": result, "e": error, "l": latency_ms, "d": decision, "dc": comment,
            "db": decided_by, "t": row.task_id, "s": row.step_index, "turn": row.turn, "seq": row.seq,
        },
    )
    if row.approval_id:
        # Back to running once nothing in the task waits for a human any more.
        await conn.execute(
            sa.text(
                "UPDATE tasks SET status='running', updated_at=now() WHERE id=:t "
                "AND status='waiting_approval' AND NOT EXISTS (SELECT 1 FROM tool_calls "
                "WHERE task_id=:t AND status='awaiting_approval')"
            ),
            {"t": row.task_id},
        )
        await conn.execute(
            sa.text(
                "UPDATE steps SET status='running' WHERE task_id=:t AND index=:i "
                "AND status='waiting_approval' AND NOT EXISTS (SELECT 1 FROM tool_calls "
                "WHERE task_id=:t AND step_index=:i AND status='awaiting_approval')"
            ),
            {"t": row.task_id, "i": row.step_index},
        )
        await add_event(
            conn, row.task_id, "approval.decided",
            {"approval_id": row.approval_id, "decision": decision, "by": decided_by},
            f"approval:{row.approval_id}:decided",
        )


# --- API side ---------------------------------------------------------------------------------

_APPROVAL_COLUMNS = (
    "c.approval_id, c.step_index, c.turn, c.call_id, c.tool, c.arguments, c.status, c.decision, "
    "c.decision_comment, c.decided_by, c.decided_at, c.created_at, c.result, c.error"
)


async def list_approvals(
    engine: AsyncEngine, task_id: str, *, pending_only: bool
) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                f"SELECT {_APPROVAL_COLUMNS} FROM tool_calls c WHERE c.task_id=:t "
                "AND c.approval_id IS NOT NULL "
                + ("AND c.status='awaiting_approval' AND c.decision IS NULL " if pending_only else "")
                + "ORDER BY c.id"
            ),
            {"t": task_id},
        )
        return [dict(r) for r in rows.mappings()]


async def get_approval(engine: AsyncEngine, task_id: str, approval_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(f"SELECT {_APPROVAL_COLUMNS} FROM tool_calls c WHERE c.task_id=:t "
                        "AND c.approval_id=:a"),
                {"t": task_id, "a": approval_id},
            )
        ).mappings().first()
    return dict(row) if row else None
