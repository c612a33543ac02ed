"""Plans and agents chosen by the client: no planning call, the planner's validation rules,
nothing written for a bad plan, and where each task's plan came from."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from fake_openai import Reply
from fake_openai.plans import is_plan_request
from planner.agents import AGENTS
from tests.agents.helpers import ledger, user_text
from tests.utils import Stack


async def _counts(stack: Stack) -> tuple[int, int]:
    async with stack.engine.connect() as conn:
        tasks = (await conn.execute(sa.text("SELECT count(*) FROM tasks"))).scalar_one()
        steps = (await conn.execute(sa.text("SELECT count(*) FROM steps"))).scalar_one()
    return tasks, steps


def _plan_requests(stack: Stack) -> int:
    return sum(1 for r in stack.fake.requests if r.body and is_plan_request(r.body))


async def test_named_agent_runs_one_step_without_planning(stack: Stack) -> None:
    task_id = await stack.submit("Proofread: the cat sat on teh mat", agent="reviewer")
    task = await stack.wait(task_id)

    assert task["status"] == "completed", task
    assert task["plan_source"] == "client"
    assert [(s["agent"], s["status"]) for s in task["steps"]] == [("reviewer", "completed")]
    assert task["progress"] == {"steps_done": 1, "steps_total": 1}
    # One LLM request in all, the step's, sent with the reviewer's system prompt.
    assert len(stack.fake.requests) == 1
    assert _plan_requests(stack) == 0
    assert stack.fake.requests[0].body["messages"][0]["content"] == AGENTS["reviewer"].system_prompt
    assert [(r.purpose, r.step_index) for r in await ledger(stack, task_id)] == [("step", 0)]
    assert task["cost"]["llm_calls"] == 1


async def test_client_plan_runs_as_given_dag(stack: Stack) -> None:
    plan = [
        {
            "title": "Prices of A",
            "agent": "researcher",
            "instructions": "Find the price of laptop A",
        },
        {
            "title": "Prices of B",
            "agent": "researcher",
            "instructions": "Find the price of laptop B",
        },
        {
            "title": "Compare",
            "agent": "analyst",
            "instructions": "Compare A and B",
            "depends_on": [0, 1],
        },
    ]
    task_id = await stack.submit("Which laptop is the better buy?", plan=plan)
    task = await stack.wait(task_id)

    assert task["status"] == "completed", task
    assert task["plan_source"] == "client"
    assert task["plan_fallback"] is False
    assert [
        (s["title"], s["agent"], s["instructions"], s["depends_on"]) for s in task["steps"]
    ] == [(p["title"], p["agent"], p["instructions"], p.get("depends_on", [])) for p in plan]
    assert task["progress"] == {"steps_done": 3, "steps_total": 3}
    assert len(stack.fake.requests) == 3
    assert _plan_requests(stack) == 0
    assert sorted(r.step_index for r in await ledger(stack, task_id)) == [0, 1, 2]
    # The last step read the outputs of both the steps it depends on.
    last = user_text(stack.fake.requests[-1].body)
    assert "Output of step 0 (Prices of A)" in last and "Output of step 1 (Prices of B)" in last
    assert task["result"] == task["steps"][2]["output"]


async def test_planner_and_fallback_plans_say_so(stack: Stack) -> None:
    planned = await stack.wait(await stack.submit("Explain how tides work"))
    assert planned["status"] == "completed", planned
    assert planned["plan_source"] == "planner"
    n = len(planned["steps"])
    assert planned["progress"] == {"steps_done": n, "steps_total": n}
    assert _plan_requests(stack) == 1

    stack.fake.script(Reply(content="no plan"), Reply(content="still no plan"))
    fallback = await stack.wait(await stack.submit("Explain how rainbows form"))
    assert fallback["status"] == "completed", fallback
    assert (fallback["plan_source"], fallback["plan_fallback"]) == ("fallback", True)


async def test_progress_counts_finished_steps_while_running(stack: Stack) -> None:
    stack.fake.script(Reply(), Reply(delay=30))  # step 0 answers, step 1 is held
    plan = [
        {"title": "One", "agent": "writer", "instructions": "first"},
        {"title": "Two", "agent": "writer", "instructions": "second", "depends_on": [0]},
    ]
    task_id = await stack.submit("Two steps", plan=plan)
    # The given steps are written with the task: the total is known from the start.
    assert (await stack.get(task_id))["progress"]["steps_total"] == 2
    deadline = time.monotonic() + 30
    task = await stack.get(task_id)
    while task["steps"][1]["status"] != "running":  # step 1 waits on the held reply
        assert time.monotonic() < deadline, task
        await asyncio.sleep(0.05)
        task = await stack.get(task_id)
    assert task["progress"] == {"steps_done": 1, "steps_total": 2}
    await stack.http.post(f"/tasks/{task_id}/cancel", headers=stack.headers)
    assert (await stack.wait(task_id))["status"] == "cancelled"


async def test_bad_client_plans_are_422_naming_the_field_and_write_nothing(stack: Stack) -> None:
    step = {"title": "t", "agent": "writer", "instructions": "i"}
    too_many = [step] * (stack.settings.max_plan_steps + 1)
    cases = [
        ({"agent": "writer", "plan": [step]}, "plan", "mutually exclusive"),
        ({"agent": "nobody"}, "agent", "unknown agent 'nobody'"),
        ({"plan": []}, "plan", "at least 1"),
        ({"plan": [{**step, "agent": "nobody"}]}, "plan.0.agent", "unknown agent 'nobody'"),
        (
            {"plan": [step, {**step, "depends_on": [5]}]},
            "plan.1.depends_on",
            "step 5 does not exist",
        ),
        ({"plan": [{**step, "depends_on": [0]}]}, "plan.0.depends_on", "cannot depend on itself"),
        ({"plan": [{**step, "depends_on": [1]}, {**step, "depends_on": [0]}]}, "plan", "cycle"),
        ({"plan": too_many}, "plan", f"at most {stack.settings.max_plan_steps} steps"),
        ({"plan": [{**step, "title": ""}]}, "plan.0.title", "at least 1"),
        ({"plan": [{**step, "tools": ["x"]}]}, "plan.0.tools", "not permitted"),
        ({"plan": [{"title": "t", "agent": "writer"}]}, "plan.0.instructions", "required"),
    ]
    before = await _counts(stack)
    for extra, field, problem in cases:
        resp = await stack.http.post(
            "/tasks", json={"description": "d", **extra}, headers=stack.headers
        )
        assert resp.status_code == 422, (extra, resp.text)
        err = resp.json()["error"]
        assert field in err["message"], (extra, err)
        details = [d for d in err["details"] if d["field"] == field]
        assert details, (extra, err)
        assert any(problem in d["message"] for d in details), (extra, err)
    assert await _counts(stack) == before
    assert stack.fake.requests == []


async def test_agents_lists_every_agent_with_its_tools(stack: Stack) -> None:
    resp = await stack.http.get("/agents", headers=stack.headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [a["name"] for a in body["items"]] == list(AGENTS)
    writer = next(a for a in body["items"] if a["name"] == "writer")
    assert writer["description"] == AGENTS["writer"].description
    assert writer["model"] == stack.settings.model
    tools = {t["name"]: t for t in writer["tools"]}
    assert set(tools) == set(AGENTS["writer"].tools)
    assert tools["send_email"]["requires_approval"] is True
    assert tools["write_note"]["requires_approval"] is False
    assert all(t["description"] for t in tools.values())
    assert body["default_agent"] == "writer"
    assert (await stack.http.get("/agents")).status_code == 401
