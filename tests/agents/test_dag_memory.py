"""Parallel plans, short-term memory, and completed results reaching long-term memory."""

from __future__ import annotations

import asyncio
import re

import sqlalchemy as sa

from durable_orchestrator.data import steps, tasks
from durable_orchestrator.data.engine import single_statement
from durable_orchestrator.data.tables import Memory, MemoryOutboxEntry
from fake_openai import Reply
from memory import short_term
from tests.agents.helpers import activity_runs, plan_reply, user_text
from tests.utils import Stack


def _answer_by_title(body: dict) -> Reply | None:
    match = re.search(r"Your step: (.+)", user_text(body))
    return Reply(content=f"output of {match.group(1).strip()}") if match else None


async def test_independent_steps_overlap_and_outputs_flow_along_edges(stack: Stack) -> None:
    stack.fake.latency = 0.5  # long enough that two parallel activities must overlap
    stack.fake.script(
        plan_reply(
            ("researcher", "Gather A", []),
            ("analyst", "Gather B", []),
            ("writer", "Combine", [0, 1]),
            ("reviewer", "Review", [2]),
        )
    )
    stack.fake.responder = _answer_by_title
    task_id = await stack.submit("Combine two independent findings")
    task = await stack.wait(task_id, timeout=60)

    assert task["status"] == "completed", task
    outputs = {s["title"]: s["output"] for s in task["steps"]}
    assert outputs == {t: f"output of {t}" for t in ("Gather A", "Gather B", "Combine", "Review")}
    assert task["result"] == "output of Review"

    # Outputs flow along the edges: Combine saw A and B, Review saw Combine (not A or B).
    prompts = {}
    for r in stack.fake.requests:
        m = re.search(r"Your step: (.+)", user_text(r.body))
        if m:
            prompts[m.group(1).strip()] = user_text(r.body)
    assert "output of Gather A" in prompts["Combine"] and "output of Gather B" in prompts["Combine"]
    assert "Output of step 2 (Combine):\noutput of Combine" in prompts["Review"]
    assert "Output of step 0" not in prompts["Review"]
    assert "output of Gather" not in prompts["Gather A"] + prompts["Gather B"]

    # From the history: the two independent steps ran at the same time, the dependants after.
    steps = {a.input["index"]: a for a in await activity_runs(stack, task["workflow_id"]) if a.name == "run_step"}
    a, b, combine, review = steps[0], steps[1], steps[2], steps[3]
    assert a.started < b.completed and b.started < a.completed, (a, b)
    assert combine.started >= max(a.completed, b.completed)
    assert review.started >= combine.completed


async def test_notes_reach_later_steps_through_short_term_memory(stack: Stack) -> None:
    stack.fake.script(
        plan_reply(("researcher", "Find the key fact", []), ("analyst", "Use the fact", [0])),
        Reply(tool_calls=[("write_note", {"note": "the secret number is 1234"})]),
        Reply(content="found it"),
    )
    task_id = await stack.submit("Find and use a fact")
    task = await stack.wait(task_id)
    assert task["status"] == "completed", task
    assert task["steps"][0]["tool_calls"][0]["status"] == "succeeded"
    analyst_prompt = user_text(stack.fake.requests[-1].body)
    assert "Task memory" in analyst_prompt
    assert "the secret number is 1234" in analyst_prompt
    async with stack.engine.connect() as conn:
        kinds = (
            await conn.execute(
                sa.text("SELECT kind FROM short_term_memory WHERE task_id=:t ORDER BY id"), {"t": task_id}
            )
        ).scalars().all()
    assert kinds[:2] == ["note", "tool_result"]
    assert kinds.count("output") == 2


async def test_short_term_window_drops_oldest_first(stack: Stack) -> None:
    task_id = tasks.new_task_id()
    async with stack.engine.begin() as conn:
        await tasks.insert_task(conn, task_id=task_id, user_id=stack.user, description="d", metadata={})
        for i in range(5):
            await short_term.add_entry(
                conn, task_id=task_id, step_index=0, kind="note", content=f"entry-{i}-" + "x" * 40,
                ttl_hours=1, dedupe_key=f"n{i}",
            )
        await short_term.add_entry(
            conn, task_id=task_id, step_index=0, kind="note", content="expired",
            ttl_hours=-1, dedupe_key="old",
        )
    async def window(step: int) -> list[short_term.Entry]:
        """What a first turn of `step` is given (the step rows need not exist for the read)."""
        async with single_statement(stack.engine) as conn:
            start = await steps.start_step(conn, task_id, step, "writer", exclude_outputs_of=[])
        return short_term.fit(start.entries, 120)

    texts = [e.content for e in await window(1)]
    assert sum(len(t) for t in texts) <= 120
    assert texts[-1].startswith("entry-4") and texts[-2].startswith("entry-3")  # newest kept whole
    assert not any("entry-0" in t or "entry-1" in t for t in texts)  # oldest dropped
    assert "expired" not in texts
    assert await window(0) == []  # a step's own entries are not echoed back to it


async def test_results_of_tasks_finishing_together_each_become_one_memory(stack: Stack) -> None:
    """Completed tasks queue their results; the worker's memory writer embeds them (in batches)
    after the tasks have reported completed: each ends up exactly once in long-term memory."""
    ids = await asyncio.gather(*(stack.submit(f"Write a short note on tea region {i}") for i in range(4)))
    for task_id in ids:
        assert (await stack.wait(task_id, timeout=60))["status"] == "completed"
    for task_id in ids:
        meta = await stack.remembered(task_id)
        assert (meta["source"], meta["task_id"]) == ("task_result", task_id)
    async with stack.engine.connect() as conn:
        stored = (await conn.execute(
            sa.select(Memory.task_id).where(Memory.task_id.in_(ids))
        )).scalars().all()
        queued = (await conn.execute(
            sa.select(MemoryOutboxEntry.task_id).where(MemoryOutboxEntry.task_id.in_(ids))
        )).scalars().all()
    assert sorted(stored) == sorted(ids) and queued == []
