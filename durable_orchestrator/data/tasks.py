"""Reads and writes of tasks, steps, the LLM ledger and task events.

Every write that an activity makes is idempotent: activities run at least once, so a retried
or re-delivered activity must land on the rows its first run wrote, never beside them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from durable_orchestrator.data.engine import read
from durable_orchestrator.llm.pricing import cost_usd
from durable_orchestrator.temporal.contracts import workflow_id_for

TERMINAL = frozenset({"completed", "failed", "cancelled"})


def new_task_id() -> str:
    return uuid.uuid4().hex


async def add_event(
    conn: AsyncConnection, task_id: str, type_: str, data: dict[str, Any], dedupe_key: str
) -> None:
    await conn.execute(
        sa.text(
            "INSERT INTO events (task_id, type, data, dedupe_key) "
            "VALUES (:t, :type, CAST(:data AS jsonb), :k) ON CONFLICT (dedupe_key) DO NOTHING"
        ),
        {"t": task_id, "type": type_, "data": json.dumps(data), "k": f"{task_id}:{dedupe_key}"},
    )


# --- API side ---------------------------------------------------------------------------------


async def insert_task(
    conn: AsyncConnection,
    *,
    task_id: str,
    user_id: str,
    description: str,
    metadata: dict[str, Any],
    options: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> None:
    await conn.execute(
        sa.text(
            "WITH u AS (INSERT INTO users (id) VALUES (:u) ON CONFLICT DO NOTHING) "
            "INSERT INTO tasks (id, user_id, description, metadata, status, workflow_id, "
            "idempotency_key, request_hash, options) VALUES (:id, :u, :d, CAST(:m AS jsonb), "
            "'pending', :wf, :ik, :rh, CAST(:o AS jsonb))"
        ),
        {
            "id": task_id,
            "u": user_id,
            "d": description,
            "m": json.dumps(metadata),
            "wf": workflow_id_for(task_id),
            "ik": idempotency_key,
            "rh": request_hash,
            "o": json.dumps(options or {}),
        },
    )
    await add_event(conn, task_id, "task.status", {"status": "pending"}, "status:pending")


_TASK_VIEW = sa.text(
    """
    SELECT t.id, t.user_id, t.description, t.metadata, t.status, t.result, t.error,
           t.workflow_id, t.created_at, t.updated_at, t.plan_fallback, t.plan_errors,
           COALESCE((SELECT json_agg(json_build_object(
                'index', s.index, 'agent', s.agent, 'title', s.title,
                'instructions', s.instructions, 'depends_on', s.depends_on,
                'status', s.status, 'output', s.output, 'error', s.error, 'model', s.model,
                'started_at', s.started_at, 'finished_at', s.finished_at,
                'cost', (SELECT json_build_object(
                    'usd', COALESCE(sum(c.cost_usd), 0),
                    'prompt_tokens', COALESCE(sum(c.prompt_tokens), 0),
                    'completion_tokens', COALESCE(sum(c.completion_tokens), 0))
                    FROM llm_calls c WHERE c.task_id = s.task_id AND c.step_index = s.index),
                'tool_calls', COALESCE((SELECT json_agg(json_build_object(
                    'turn', tc.turn, 'seq', tc.seq, 'call_id', tc.call_id, 'tool', tc.tool,
                    'arguments', tc.arguments, 'status', tc.status, 'result', tc.result,
                    'error', tc.error, 'latency_ms', tc.latency_ms, 'approval_id', tc.approval_id,
                    'decision', tc.decision, 'decision_comment', tc.decision_comment,
                    'created_at', tc.created_at, 'finished_at', tc.finished_at)
                    ORDER BY tc.turn, tc.seq)
                    FROM tool_calls tc WHERE tc.task_id = s.task_id AND tc.step_index = s.index), '[]')
                ) ORDER BY s.index) FROM steps s WHERE s.task_id = t.id), '[]') AS steps,
           (SELECT json_build_object(
                'usd', COALESCE(sum(c.cost_usd), 0),
                'prompt_tokens', COALESCE(sum(c.prompt_tokens), 0),
                'completion_tokens', COALESCE(sum(c.completion_tokens), 0),
                'llm_calls', count(c.id))
            FROM llm_calls c WHERE c.task_id = t.id) AS cost
    FROM tasks t WHERE t.id = :id AND t.user_id = :u
    """
)


async def get_task_view(engine: AsyncEngine, task_id: str, user_id: str) -> dict[str, Any] | None:
    """The whole task as the API shows it, in one round trip."""
    async with read(engine) as conn:
        row = (await conn.execute(_TASK_VIEW, {"id": task_id, "u": user_id})).mappings().first()
    if row is None:
        return None
    view = dict(row)
    for key in ("steps", "cost"):
        if isinstance(view[key], str):
            view[key] = json.loads(view[key])
    return view


# --- activity side ----------------------------------------------------------------------------


@dataclass
class TaskRow:
    id: str
    user_id: str
    description: str
    status: str
    options: dict[str, Any]


async def load_task(engine: AsyncEngine, task_id: str) -> TaskRow:
    async with read(engine) as conn:
        row = (
            await conn.execute(
                sa.text("SELECT id, user_id, description, status, options FROM tasks WHERE id=:id"),
                {"id": task_id},
            )
        ).first()
    if row is None:
        raise LookupError(f"task {task_id} does not exist")
    return TaskRow(*row)


_PLAN = sa.text("SELECT index, agent, title, depends_on FROM steps WHERE task_id=:t ORDER BY index")


async def existing_plan(engine: AsyncEngine, task_id: str) -> list[dict[str, Any]]:
    async with read(engine) as conn:
        rows = await conn.execute(_PLAN, {"t": task_id})
        return [dict(r) for r in rows.mappings()]


async def save_plan(
    conn: AsyncConnection,
    task_id: str,
    steps: list[dict[str, Any]],
    *,
    fallback: bool,
    errors: list[str],
) -> list[dict[str, Any]]:
    """Insert the plan (in the caller's transaction) and return the steps as stored: those of
    an earlier attempt that got there first win."""
    for i, s in enumerate(steps):
        await conn.execute(
            sa.text(
                "INSERT INTO steps (task_id, index, agent, title, instructions, depends_on, "
                "status) VALUES (:t, :i, :a, :ti, :ins, :dep, 'pending') "
                "ON CONFLICT DO NOTHING"
            ),
            {
                "t": task_id,
                "i": i,
                "a": s["agent"],
                "ti": s["title"],
                "ins": s["instructions"],
                "dep": s.get("depends_on") or [],
            },
        )
    await conn.execute(
        sa.text(
            "UPDATE tasks SET status='running', plan_fallback=:f, "
            "plan_errors=CAST(:e AS jsonb), updated_at=now() "
            "WHERE id=:t AND status NOT IN ('completed','failed','cancelled')"
        ),
        {"t": task_id, "f": fallback, "e": json.dumps(errors) if errors else None},
    )
    await add_event(conn, task_id, "task.status", {"status": "running"}, "status:running")
    await add_event(
        conn,
        task_id,
        "task.planned",
        {"steps": [{"index": i, "agent": s["agent"], "title": s["title"]} for i, s in enumerate(steps)],
         "fallback": fallback},
        "planned",
    )
    return [dict(r) for r in (await conn.execute(_PLAN, {"t": task_id})).mappings()]


async def record_llm_call(
    conn: AsyncConnection,
    *,
    task_id: str,
    step_index: int | None,
    purpose: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    latency_ms: int,
    call_key: str,
) -> Decimal:
    cost, priced = cost_usd(model, prompt_tokens, completion_tokens)
    await conn.execute(
        sa.text(
            "INSERT INTO llm_calls (task_id, step_index, purpose, model, prompt_tokens, "
            "completion_tokens, cost_usd, priced, latency_ms, call_key) VALUES "
            "(:t, :s, :p, :m, :pt, :ct, :c, :pr, :l, :k) ON CONFLICT (call_key) DO NOTHING"
        ),
        {
            "t": task_id,
            "s": step_index,
            "p": purpose,
            "m": model,
            "pt": prompt_tokens,
            "ct": completion_tokens,
            "c": cost,
            "pr": priced,
            "l": latency_ms,
            "k": call_key,
        },
    )
    return cost


@dataclass
class StepContext:
    description: str
    agent: str
    title: str
    instructions: str
    status: str
    output: str | None
    model: str | None
    dependencies: list[tuple[int, str, str]]  # (index, title, output)
    options: dict[str, Any] | None = None  # the task's options (budget), read in the same query


async def step_context(engine: AsyncEngine, task_id: str, index: int) -> StepContext:
    """Everything a step's prompt needs, plus its own state (to skip work already done)."""
    async with read(engine) as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT t.description, t.options, s.agent, s.title, s.instructions, s.status, "
                    "s.output, s.model, s.depends_on FROM steps s JOIN tasks t ON t.id = s.task_id "
                    "WHERE s.task_id=:t AND s.index=:i"
                ),
                {"t": task_id, "i": index},
            )
        ).first()
        if row is None:
            raise LookupError(f"step {index} of task {task_id} does not exist")
        deps = []
        if row.depends_on:
            deps = [
                (r.index, r.title, r.output or "")
                for r in await conn.execute(
                    sa.text(
                        "SELECT index, title, output FROM steps WHERE task_id=:t "
                        "AND index = ANY(:d) ORDER BY index"
                    ),
                    {"t": task_id, "d": list(row.depends_on)},
                )
            ]
    return StepContext(
        description=row.description,
        agent=row.agent,
        title=row.title,
        instructions=row.instructions,
        status=row.status,
        output=row.output,
        model=row.model,
        dependencies=deps,
        options=row.options if isinstance(row.options, dict) else json.loads(row.options or "{}"),
    )


async def mark_step_started(conn: AsyncConnection, task_id: str, index: int, agent: str) -> None:
    await conn.execute(
        sa.text(
            "UPDATE steps SET status='running', started_at=COALESCE(started_at, now()) "
            "WHERE task_id=:t AND index=:i AND status IN ('pending','running')"
        ),
        {"t": task_id, "i": index},
    )
    await add_event(
        conn, task_id, "step.started", {"index": index, "agent": agent}, f"step:{index}:started"
    )


async def mark_step_finished(
    conn: AsyncConnection, task_id: str, index: int, *, output: str, model: str
) -> None:
    await conn.execute(
        sa.text(
            "UPDATE steps SET status='completed', output=:o, model=:m, error=NULL, "
            "started_at=COALESCE(started_at, now()), finished_at=now() "
            # Not over a cancelled/skipped/failed step: a call that outlived its task's
            # cancellation must not flip the step back to completed.
            "WHERE task_id=:t AND index=:i AND status IN ('pending','running')"
        ),
        {"t": task_id, "i": index, "o": output, "m": model},
    )
    await conn.execute(
        sa.text("UPDATE tasks SET updated_at=now() WHERE id=:t"), {"t": task_id}
    )
    await add_event(
        conn,
        task_id,
        "step.finished",
        {"index": index, "status": "completed", "model": model, "preview": output[:200]},
        f"step:{index}:finished",
    )


async def finish_task(
    engine: AsyncEngine,
    task_id: str,
    status: str,
    *,
    error: str | None = None,
    failed_step: int | None = None,
) -> str | None:
    """Terminal status. The result is the output of the plan's sink steps (those nothing
    depends on), in order. Returns the result."""
    async with engine.begin() as conn:
        result = None
        if status == "completed":
            rows = await conn.execute(
                sa.text(
                    "SELECT s.output FROM steps s WHERE s.task_id=:t AND NOT EXISTS ("
                    "SELECT 1 FROM steps d WHERE d.task_id=s.task_id AND s.index = ANY(d.depends_on)"
                    ") ORDER BY s.index"
                ),
                {"t": task_id},
            )
            result = "\n\n".join(r.output or "" for r in rows)
        else:
            if failed_step is not None:
                await conn.execute(
                    sa.text(
                        "UPDATE steps SET status='failed', error=:e, finished_at=now() "
                        "WHERE task_id=:t AND index=:i AND status <> 'completed'"
                    ),
                    {"t": task_id, "i": failed_step, "e": error},
                )
            await conn.execute(
                sa.text(
                    "UPDATE steps SET status=:s, finished_at=COALESCE(finished_at, now()) "
                    "WHERE task_id=:t AND status IN ('pending','running','waiting_approval')"
                ),
                {"t": task_id, "s": "cancelled" if status == "cancelled" else "skipped"},
            )
            # Tool calls that will never run now (pending approvals included) say so.
            await conn.execute(
                sa.text(
                    "UPDATE tool_calls SET status='rejected', finished_at=now(), "
                    "error=COALESCE(error, 'not run: the task ended first (' || :s || ')') "
                    "WHERE task_id=:t AND status IN ('validated','awaiting_approval')"
                ),
                {"t": task_id, "s": status},
            )
        await conn.execute(
            sa.text(
                "UPDATE tasks SET status=:s, result=COALESCE(:r, result), error=:e, updated_at=now() "
                "WHERE id=:t AND status NOT IN ('completed','failed','cancelled')"
            ),
            {"t": task_id, "s": status, "r": result, "e": error},
        )
        data: dict[str, Any] = {"status": status}
        if error:
            data["error"] = error
        await add_event(conn, task_id, "task.status", data, f"status:{status}")
    return result


async def task_age_secs(engine: AsyncEngine, task_id: str) -> float | None:
    """Seconds since the task was submitted (for task_duration_seconds)."""
    async with read(engine) as conn:
        age = (
            await conn.execute(
                sa.text("SELECT extract(epoch FROM now() - created_at) FROM tasks WHERE id=:t"),
                {"t": task_id},
            )
        ).scalar()
    return float(age) if age is not None else None
