"""Reads and writes of tool calls and of the tool-calling conversation of a step.

Only steps whose model asks for tools store a conversation (step_messages); a step answered
in one call writes nothing here. Tool results live in tool_calls and are spliced back into
the conversation after the assistant message that requested them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import select

from durable_orchestrator.data.clauses import none_of, one_of
from durable_orchestrator.data.events import add_event
from durable_orchestrator.data.tables import TERMINAL, Step, StepMessage, Task, ToolCall

FINAL = frozenset({"succeeded", "failed", "rejected"})

# Parameters are not named like columns: SQLAlchemy reads an UPDATE's parameters named after
# a column of its table as values to SET (the INSERTs' rows, though, are keyed by column).
_TASK = bindparam("task")
_STEP = bindparam("step")
_TURN = bindparam("at_turn")


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
    context_labels: list[str] = field(default_factory=list)
    reason: str | None = None  # why it waits for approval beyond the tool's own flag


def assistant_message(content: str | None, calls: list[NewCall]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {"id": c.call_id, "type": "function", "function": {"name": c.tool, "arguments": c.arguments}}
            for c in calls
        ],
    }


_INSERT_MESSAGE = insert(StepMessage).on_conflict_do_nothing()
# A call refused at validation is over as soon as it is stored.
_INSERT_CALL = (
    insert(ToolCall)
    .values(finished_at=sa.case((bindparam("rejected", type_=sa.Boolean), func.now())))
    .on_conflict_do_nothing()
)
_AWAIT_TASK = (
    sa.update(Task)
    .where(Task.id == _TASK, none_of(Task.status, TERMINAL))
    .values(status="waiting_approval", updated_at=func.now())
)
_AWAIT_STEP = (
    sa.update(Step)
    .where(Step.task_id == _TASK, Step.index == _STEP, one_of(Step.status, ("pending", "running")))
    .values(status="waiting_approval")
)


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
    step = {"task_id": task_id, "step_index": step_index, "turn": turn}  # the rows' keys
    messages = [*(prompt or []), assistant]
    await conn.execute(
        _INSERT_MESSAGE, [{**step, "seq": seq, "message": m} for seq, m in enumerate(messages)]
    )
    if calls:
        await conn.execute(
            _INSERT_CALL,
            [
                {
                    **step, "seq": c.seq, "call_id": c.call_id, "tool": c.tool, "arguments": c.arguments,
                    "status": c.status, "error": c.error, "requires_approval": c.approval_id is not None,
                    "approval_id": c.approval_id, "rejected": c.status == "rejected",
                    "context_labels": c.context_labels,
                }
                for c in calls
            ],
        )
    pending = [c for c in calls if c.status == "awaiting_approval"]
    if pending:
        await conn.execute(_AWAIT_TASK, {"task": task_id})
        await conn.execute(_AWAIT_STEP, {"task": task_id, "step": step_index})
        for c in pending:
            await add_event(
                conn, task_id, "approval.requested",
                {"approval_id": c.approval_id, "step": step_index, "tool": c.tool,
                 **({"reason": c.reason} if c.reason else {})},
                f"approval:{c.approval_id}:requested",
            )


_TURN_STORED = (
    select(StepMessage.seq)
    .where(StepMessage.task_id == _TASK, StepMessage.step_index == _STEP, StepMessage.turn == _TURN)
    .limit(1)
)
_TURN_CALLS = (
    select(
        ToolCall.seq, ToolCall.call_id, ToolCall.tool, ToolCall.arguments, ToolCall.status,
        ToolCall.error, ToolCall.approval_id,
    )
    .where(ToolCall.task_id == _TASK, ToolCall.step_index == _STEP, ToolCall.turn == _TURN)
    .order_by(ToolCall.seq)
)


async def saved_turn(engine: AsyncEngine, task_id: str, step_index: int, turn: int) -> list[NewCall] | None:
    """The calls an earlier attempt of this turn committed, or None if it committed nothing."""
    params = {"task": task_id, "step": step_index, "at_turn": turn}
    async with engine.connect() as conn:
        if (await conn.execute(_TURN_STORED, params)).first() is None:
            return None
        rows = await conn.execute(_TURN_CALLS, params)
        return [
            NewCall(r.seq, r.call_id, r.tool, r.arguments, _as_requested(r.status, r.approval_id),
                    r.error, r.approval_id)
            for r in rows
        ]


def _as_requested(status: str, approval_id: str | None) -> str:
    """A stored call's status as its turn first returned it (before it ran or was decided)."""
    if approval_id:
        return "awaiting_approval"
    return "rejected" if status == "rejected" else "validated"


def tool_message(call_id: str, status: str, result: str | None, error: str | None) -> dict[str, Any]:
    if status == "succeeded":
        content = result or ""
    elif status == "failed":
        content = f"error: {error}"
    else:
        content = error or result or status
    return {"role": "tool", "tool_call_id": call_id, "content": content}


_MESSAGES = (
    select(StepMessage.turn, StepMessage.message)
    .where(StepMessage.task_id == _TASK, StepMessage.step_index == _STEP)
    .order_by(StepMessage.turn, StepMessage.seq)
)
_RESULTS = (
    select(ToolCall.turn, ToolCall.call_id, ToolCall.status, ToolCall.result, ToolCall.error)
    .where(ToolCall.task_id == _TASK, ToolCall.step_index == _STEP)
    .order_by(ToolCall.turn, ToolCall.seq)
)


async def conversation(engine: AsyncEngine, task_id: str, step_index: int) -> list[dict[str, Any]]:
    """The step's conversation so far: stored messages with tool results after each turn."""
    params = {"task": task_id, "step": step_index}
    async with engine.connect() as conn:
        msgs = (await conn.execute(_MESSAGES, params)).all()
        calls = (await conn.execute(_RESULTS, params)).all()
    by_turn: dict[int, list[dict[str, Any]]] = {}
    for c in calls:
        by_turn.setdefault(c.turn, []).append(tool_message(c.call_id, c.status, c.result, c.error))
    out: list[dict[str, Any]] = []
    turns = sorted({m.turn for m in msgs})
    for turn in turns:
        out += [m.message for m in msgs if m.turn == turn]
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
    id: int  # of the tool_calls row
    context_labels: list[str]


_CALL = (
    select(
        ToolCall.task_id, Task.user_id, Step.agent, ToolCall.step_index, ToolCall.turn, ToolCall.seq,
        ToolCall.call_id, ToolCall.tool, ToolCall.arguments, ToolCall.status, ToolCall.result,
        ToolCall.error, ToolCall.approval_id, ToolCall.id, ToolCall.context_labels,
    )
    .join_from(ToolCall, Task, Task.id == ToolCall.task_id)
    .join(Step, (Step.task_id == ToolCall.task_id) & (Step.index == ToolCall.step_index))
    .where(
        ToolCall.task_id == _TASK, ToolCall.step_index == _STEP, ToolCall.turn == _TURN,
        ToolCall.seq == bindparam("at_seq"),
    )
)


async def load_call(engine: AsyncEngine, task_id: str, step_index: int, turn: int, seq: int) -> CallRow:
    async with engine.connect() as conn:
        row = (
            await conn.execute(_CALL, {"task": task_id, "step": step_index, "at_turn": turn, "at_seq": seq})
        ).first()
    if row is None:
        raise LookupError(f"tool call {task_id}/{step_index}/{turn}/{seq} does not exist")
    return CallRow(*row)


_DECISION = bindparam("new_decision", type_=sa.Text)
_FINISH_CALL = (
    sa.update(ToolCall)
    .where(ToolCall.id == bindparam("call"), none_of(ToolCall.status, FINAL))
    .values(
        status=bindparam("new_status"), result=bindparam("new_result"), error=bindparam("new_error"),
        latency_ms=bindparam("new_latency_ms"), finished_at=func.now(),
        decision=func.coalesce(_DECISION, ToolCall.decision),
        decision_comment=func.coalesce(bindparam("comment", type_=sa.Text), ToolCall.decision_comment),
        decided_by=func.coalesce(bindparam("reviewer", type_=sa.Text), ToolCall.decided_by),
        decided_at=sa.case(
            (_DECISION.is_not(None), func.coalesce(ToolCall.decided_at, func.now())),
            else_=ToolCall.decided_at,
        ),
    )
)
# Back to running once nothing in the task (the step) waits for a human any more.
_WAITING = ToolCall.status == "awaiting_approval"
_RESUME_TASK = (
    sa.update(Task)
    .where(
        Task.id == _TASK, Task.status == "waiting_approval",
        ~sa.exists().where(ToolCall.task_id == _TASK, _WAITING),
    )
    .values(status="running", updated_at=func.now())
)
_RESUME_STEP = (
    sa.update(Step)
    .where(
        Step.task_id == _TASK, Step.index == _STEP, Step.status == "waiting_approval",
        ~sa.exists().where(ToolCall.task_id == _TASK, ToolCall.step_index == _STEP, _WAITING),
    )
    .values(status="running")
)


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
        _FINISH_CALL,
        {
            "call": row.id, "new_status": status, "new_result": result, "new_error": error,
            "new_latency_ms": latency_ms, "new_decision": decision, "comment": comment,
            "reviewer": decided_by,
        },
    )
    if row.approval_id:
        await conn.execute(_RESUME_TASK, {"task": row.task_id})
        await conn.execute(_RESUME_STEP, {"task": row.task_id, "step": row.step_index})
        await add_event(
            conn, row.task_id, "approval.decided",
            {"approval_id": row.approval_id, "decision": decision, "by": decided_by},
            f"approval:{row.approval_id}:decided",
        )


# --- API side ---------------------------------------------------------------------------------

_APPROVALS = select(
    ToolCall.approval_id, ToolCall.step_index, ToolCall.turn, ToolCall.call_id, ToolCall.tool,
    ToolCall.arguments, ToolCall.status, ToolCall.decision, ToolCall.decision_comment,
    ToolCall.decided_by, ToolCall.decided_at, ToolCall.created_at, ToolCall.result, ToolCall.error,
    ToolCall.context_labels,
).where(ToolCall.task_id == _TASK)
_ALL_APPROVALS = _APPROVALS.where(ToolCall.approval_id.is_not(None)).order_by(ToolCall.id)
_PENDING_APPROVALS = _ALL_APPROVALS.where(ToolCall.status == "awaiting_approval", ToolCall.decision.is_(None))
_APPROVAL = _APPROVALS.where(ToolCall.approval_id == bindparam("approval"))


async def list_approvals(
    engine: AsyncEngine, task_id: str, *, pending_only: bool
) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(_PENDING_APPROVALS if pending_only else _ALL_APPROVALS, {"task": task_id})
        return [dict(r) for r in rows.mappings()]


async def get_approval(engine: AsyncEngine, task_id: str, approval_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(_APPROVAL, {"task": task_id, "approval": approval_id})
        ).mappings().first()
    return dict(row) if row else None
