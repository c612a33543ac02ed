"""The task, step, tool-call and ledger statements on the real PostgreSQL, without Temporal:
each write lands once however often an activity repeats it, and the task view adds it all up."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import (
    conversation,
    events,
    ledger,
    steps,
    task_list,
    task_view,
    tasks,
)
from durable_orchestrator.data.engine import single_statement

PLAN = [
    {"agent": "researcher", "title": "Find", "instructions": "find it", "depends_on": []},
    {"agent": "writer", "title": "Write", "instructions": "write it", "depends_on": [0]},
]


async def _task(engine: AsyncEngine, user: str, **kw) -> str:  # type: ignore[no-untyped-def]
    task_id = tasks.new_task_id()
    async with engine.begin() as conn:
        await tasks.insert_task(conn, task_id=task_id, user_id=user, description="d", metadata={"k": 1}, **kw)
    return task_id


async def _llm_call(engine: AsyncEngine, task_id: str, step: int | None, key: str, tokens: int) -> None:
    async with engine.begin() as conn:
        await ledger.record_llm_call(
            conn, task_id=task_id, step_index=step, purpose="step" if step is not None else "plan",
            model="gpt-4o-mini", prompt_tokens=tokens, completion_tokens=1, latency_ms=3, call_key=key,
        )


async def test_a_task_from_submission_to_its_view(engine: AsyncEngine) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    task_id = await _task(engine, user, options={"budget": {"max_tokens": 500}},
                          idempotency_key="k1", request_hash="h1")
    assert await tasks.task_status(engine, task_id, user) == "pending"
    assert await tasks.task_status(engine, task_id, "someone-else") is None
    found = await tasks.find_submission(engine, user, "k1")
    assert found is not None and (found.id, found.request_hash) == (task_id, "h1")
    assert found.options == {"budget": {"max_tokens": 500}}

    for _ in range(2):  # a retried plan activity lands on the same rows
        async with engine.begin() as conn:
            saved = await steps.save_plan(conn, task_id, PLAN, fallback=True, errors=["bad json"])
    assert [(s["index"], s["depends_on"]) for s in saved] == [(0, []), (1, [0])]
    assert (await steps.task_and_plan(engine, task_id))[1] == saved

    async with engine.begin() as conn:
        await steps.start_step(conn, task_id, 0, "researcher", exclude_outputs_of=[])
        await steps.mark_step_finished(conn, task_id, 0, output="facts", model="gpt-4o-mini")
    ctx = await steps.step_context(engine, task_id, 1)
    assert (ctx.agent, ctx.status, ctx.dependencies) == ("writer", "pending", [(0, "Find", "facts")])
    assert ctx.options == {"budget": {"max_tokens": 500}}
    for _ in range(2):
        await _llm_call(engine, task_id, 0, f"{task_id}:a", 10)
    await _llm_call(engine, task_id, None, f"{task_id}:plan", 5)

    spend = await ledger.spend(engine, task_id)
    assert (spend.user_id, spend.task_tokens, spend.user_tokens_today) == (user, 17, 17)
    assert spend.task_cost > 0 and spend.user_cost_today == spend.task_cost

    async with engine.begin() as conn:
        await steps.start_step(conn, task_id, 1, "writer", exclude_outputs_of=[])
        await steps.mark_step_finished(conn, task_id, 1, output="report", model="gpt-4o-mini")
    finished = await tasks.finish_task(engine, task_id, "completed")
    assert finished.result == "report"  # the sink step
    assert finished.age_secs is not None and finished.age_secs >= 0
    # Finishing again ends nothing: no age, so the task is counted once in the metrics.
    assert (await tasks.finish_task(engine, task_id, "completed")).age_secs is None
    # A call that outlives the end of its step does not change it.
    async with engine.begin() as conn:
        await steps.mark_step_finished(conn, task_id, 1, output="late", model="other")

    view = await task_view.get_task_view(engine, task_id, user)
    assert view is not None
    assert (view["status"], view["result"], view["metadata"]) == ("completed", "report", {"k": 1})
    assert (view["plan_fallback"], view["plan_errors"]) == (True, ["bad json"])
    assert [(s["status"], s["output"]) for s in view["steps"]] == [
        ("completed", "facts"), ("completed", "report")]
    assert view["steps"][0]["cost"]["prompt_tokens"] == 10 and view["steps"][1]["cost"]["prompt_tokens"] == 0
    assert view["steps"][0]["tool_calls"] == []
    assert (view["cost"]["llm_calls"], view["cost"]["prompt_tokens"]) == (2, 15)
    assert Decimal(str(view["cost"]["usd"])) == spend.task_cost
    assert await task_view.get_task_view(engine, task_id, "someone-else") is None

    evs = [(e.type, e.data.get("status")) for e in await events.read_after(engine, task_id, 0)]
    assert evs == [
        ("task.status", "pending"), ("task.status", "running"), ("task.planned", None),
        ("step.started", None), ("step.finished", "completed"),
        ("step.started", None), ("step.finished", "completed"), ("task.status", "completed"),
    ]
    assert await events.any_after(engine, task_id, 0)

    rows, cursor = await task_list.list_tasks(engine, user, status="completed", limit=5, cursor=None)
    assert [(r["id"], r["metadata"]) for r in rows] == [(task_id, {"k": 1})] and cursor is None


async def test_the_first_plan_written_wins_and_an_ended_task_is_not_started(engine: AsyncEngine) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    task_id = await _task(engine, user)
    one_step = [{"agent": "writer", "title": "Other", "instructions": "other", "depends_on": []}]
    async with single_statement(engine) as conn:
        first = await steps.save_plan(conn, task_id, PLAN, fallback=False, errors=[], labels=["private"])
        # A late attempt with another plan: its step 0 collides, and the stored plan is returned.
        late = await steps.save_plan(conn, task_id, one_step, fallback=True, errors=["late"])
    assert [s["title"] for s in first] == [s["title"] for s in late] == ["Find", "Write"]
    stored, plan = await steps.task_and_plan(engine, task_id)
    assert (stored.user_id, stored.status, plan) == (user, "running", first)
    evs = await events.read_after(engine, task_id, 0)
    assert [e.type for e in evs] == ["task.status", "task.status", "task.planned"]
    assert evs[2].data["steps"] == [{"index": 0, "agent": "researcher", "title": "Find"},
                                    {"index": 1, "agent": "writer", "title": "Write"}]
    # Numbers follow each other; the late attempt's events collapsed onto the first ones.
    assert [e.id for e in evs] == [1, 2, 3]
    async with single_statement(engine) as conn:
        start = await steps.start_step(conn, task_id, 0, "researcher", exclude_outputs_of=[])
    assert (start.entries, start.labels) == ([], ["private"])  # the plan's labels reach its steps

    # A plan given with the submission starts a pending task once, and never an ended one.
    given = await _task(engine, user)
    async with engine.begin() as conn:
        await steps.insert_given_plan(conn, given, PLAN)
    _, plan = await steps.task_and_plan(engine, given)
    for _ in range(2):
        await steps.start_given_plan(engine, given, plan)
    assert [e.type for e in await events.read_after(engine, given, 0)] == [
        "task.status", "task.status", "task.planned"]
    await tasks.finish_task(engine, given, "cancelled")
    ended = await _task(engine, user)
    await tasks.finish_task(engine, ended, "cancelled")
    async with single_statement(engine) as conn:
        await steps.save_plan(conn, ended, PLAN, fallback=False, errors=[])
    ended_row, _ = await steps.task_and_plan(engine, ended)
    assert ended_row.status == "cancelled"
    assert [e.data.get("status") for e in await events.read_after(engine, ended, 0)] == ["pending", "cancelled"]


async def test_a_tool_call_waits_for_approval_and_ends_with_the_task(engine: AsyncEngine) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    task_id = await _task(engine, user)
    async with engine.begin() as conn:
        await steps.save_plan(conn, task_id, PLAN[:1], fallback=False, errors=[])
        await steps.start_step(conn, task_id, 0, "researcher", exclude_outputs_of=[])
    calls = [
        conversation.NewCall(0, "c0", "send_email", '{"to": "a"}', "awaiting_approval",
                             approval_id=f"apr_{task_id}"),
        conversation.NewCall(1, "c1", "nope", "{}", "rejected", error="unknown tool"),
        conversation.NewCall(2, "c2", "calculator", '{"expression": "1+1"}', "validated"),
    ]
    prompt = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    for _ in range(2):  # a retried run_step lands on the same rows
        async with engine.begin() as conn:
            await conversation.save_turn(
                conn, task_id=task_id, step_index=0, turn=0, prompt=prompt,
                assistant=conversation.assistant_message(None, calls), calls=calls,
            )
    saved = await conversation.saved_turn(engine, task_id, 0, 0)
    assert saved is not None and [(c.call_id, c.status) for c in saved] == [
        ("c0", "awaiting_approval"), ("c1", "rejected"), ("c2", "validated")]
    assert await conversation.saved_turn(engine, task_id, 0, 1) is None
    stored = (await task_view.get_task_view(engine, task_id, user) or {})["steps"][0]["tool_calls"]
    # a call refused at validation is over when stored; the others are not
    assert [c["finished_at"] is not None for c in stored] == [False, True, False]
    assert await tasks.task_status(engine, task_id, user) == "waiting_approval"
    pending = await conversation.list_approvals(engine, task_id, pending_only=True)
    assert [a["approval_id"] for a in pending] == [f"apr_{task_id}"]

    done = await conversation.load_call(engine, task_id, 0, 0, 2)
    assert (done.user_id, done.agent, done.tool) == (user, "researcher", "calculator")
    async with engine.begin() as conn:
        await conversation.finish_call(conn, done, status="succeeded", result="2", latency_ms=4)
        await conversation.finish_call(conn, done, status="failed", error="a late retry")  # ignored
    approval = await conversation.load_call(engine, task_id, 0, 0, 0)
    async with engine.begin() as conn:
        await conversation.finish_call(conn, approval, status="rejected", error="no", decision="reject",
                                       comment="not now", decided_by="rev")
    decided = await conversation.get_approval(engine, task_id, f"apr_{task_id}")
    assert decided is not None
    assert (decided["status"], decided["decision"], decided["decision_comment"], decided["decided_by"]) == (
        "rejected", "reject", "not now", "rev")
    assert decided["decided_at"] is not None
    assert await conversation.list_approvals(engine, task_id, pending_only=True) == []
    assert await tasks.task_status(engine, task_id, user) == "running"  # nothing waits any more

    history = await conversation.conversation(engine, task_id, 0)
    assert [m["role"] for m in history] == ["system", "user", "assistant", "tool", "tool", "tool"]
    assert [m["content"] for m in history[3:]] == ["no", "unknown tool", "2"]

    async with engine.begin() as conn:  # a new turn's call that never runs: the task fails first
        await conversation.save_turn(
            conn, task_id=task_id, step_index=0, turn=1, prompt=None,
            assistant=conversation.assistant_message(None, calls[2:]), calls=calls[2:],
        )
    await tasks.finish_task(engine, task_id, "failed", error="boom", failed_step=0)
    view = await task_view.get_task_view(engine, task_id, user)
    assert view is not None and (view["status"], view["error"]) == ("failed", "boom")
    assert (view["steps"][0]["status"], view["steps"][0]["error"]) == ("failed", "boom")
    assert [(c["turn"], c["status"]) for c in view["steps"][0]["tool_calls"]] == [
        (0, "rejected"), (0, "rejected"), (0, "succeeded"), (1, "rejected")]
    assert view["steps"][0]["tool_calls"][3]["error"] == "not run: the task ended first (failed)"


async def test_usage_groups_and_a_withdrawn_submission(engine: AsyncEngine) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    first, second = await _task(engine, user), await _task(engine, user)
    await _llm_call(engine, first, None, f"{first}:p", 100)
    await _llm_call(engine, second, None, f"{second}:p", 50)
    by_task = await ledger.usage(engine, user, "task")
    assert sorted((r.key, r.prompt_tokens, r.llm_calls) for r in by_task) == sorted(
        [(first, 100, 1), (second, 50, 1)])
    (day,) = await ledger.usage(engine, user, "day")
    assert day.prompt_tokens == 150 and len(day.key) == 10
    assert [r.key for r in await ledger.usage(engine, user, "model")] == ["gpt-4o-mini"]
    assert await ledger.usage(engine, "nobody", "model") == []

    await tasks.delete_task(engine, second)
    assert await tasks.task_status(engine, second, user) is None
    assert [r.key for r in await ledger.usage(engine, user, "task")] == [first]
