"""Budgets stop a task before a call that could exceed them; the ledger and /usage add up."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from temporalio.client import Client

from durable_orchestrator.llm.budget import worst_case
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI, Reply
from planner.models import response_format
from planner.planner import system_prompt, user_prompt
from tests.agents.helpers import ledger, plan_reply
from tests.utils import Stack, running_stack


async def test_task_budget_stops_before_the_call_that_could_exceed_it(stack: Stack) -> None:
    description = "Write a short report on tea"
    plan_messages = [
        {"role": "system", "content": system_prompt(stack.settings.max_plan_steps)},
        {"role": "user", "content": user_prompt(description, [])},
    ]
    # Enough for the plan's worst case, not for the plan plus any step's worst case.
    plan_format = response_format(stack.settings.max_plan_steps)
    plan_worst = worst_case(
        stack.settings, stack.settings.model, plan_messages, stack.settings.llm_max_tokens, [None, plan_format]
    )
    max_tokens = plan_worst.tokens + 50
    task_id = await stack.submit(description, budget={"max_tokens": max_tokens})
    task = await stack.wait(task_id)

    assert task["status"] == "failed", task
    assert task["error"].startswith("budget_exceeded"), task["error"]
    assert "task token budget" in task["error"]
    rows = await ledger(stack, task_id)
    assert [r.purpose for r in rows] == ["plan"]  # the plan ran; no step call was made
    assert len(stack.fake.requests) == 1
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows) <= max_tokens
    # Partial results are kept: the plan and its steps are there, the stopped step says why.
    assert len(task["steps"]) >= 2
    assert task["steps"][0]["status"] == "failed"
    assert task["steps"][0]["error"].startswith("budget_exceeded")
    assert {s["status"] for s in task["steps"][1:]} == {"skipped"}


async def test_tiny_budget_makes_no_call_at_all(stack: Stack) -> None:
    task_id = await stack.submit("Anything", budget={"max_tokens": 10})
    task = await stack.wait(task_id)
    assert task["status"] == "failed" and task["error"].startswith("budget_exceeded")
    assert stack.fake.requests == []


async def test_cost_budget_and_bad_budget_request(stack: Stack) -> None:
    # gpt-4o-mini is priced, so even the plan's worst case costs more than this.
    task_id = await stack.submit("Anything", budget={"max_cost_usd": 0.0000001})
    task = await stack.wait(task_id)
    assert task["status"] == "failed" and "task cost budget" in task["error"]
    assert stack.fake.requests == []
    resp = await stack.http.post(
        "/tasks", json={"description": "x", "budget": {"max_tokens": -1}}, headers=stack.headers
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "validation_error"


async def test_daily_user_budget_blocks_a_second_task(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    async with running_stack(
        base_settings, temporal_client, fake_llm, user_daily_max_tokens=1_000_000
    ) as stack:
        first = await stack.wait(await stack.submit("First task of the day"))
        assert first["status"] == "completed", first
        used = first["cost"]["prompt_tokens"] + first["cost"]["completion_tokens"]
        calls_before = len(fake_llm.requests)
        # Today's allowance now ends just above what the first task used: no call fits.
        stack.settings.user_daily_max_tokens = used + 100
        second = await stack.wait(await stack.submit("Second task of the day"))
        assert second["status"] == "failed", second
        assert second["error"].startswith("budget_exceeded")
        assert "daily token budget" in second["error"]
        assert len(fake_llm.requests) == calls_before
        async with stack.engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT count(*) FROM llm_calls WHERE task_id=:t"), {"t": second["id"]})).scalar()
        assert rows == 0


async def test_ledger_and_usage_report_match_the_fake_exactly(stack: Stack) -> None:
    stack.fake.script(
        plan_reply(("researcher", "Compute", []), ("writer", "Write", [0])),
        Reply(tool_calls=[("calculator", {"expression": "6*7"})], prompt_tokens=111, completion_tokens=7),
        Reply(content="42", prompt_tokens=222, completion_tokens=3),
    )
    stack.fake.script(Reply(content="The answer is 42.", prompt_tokens=333, completion_tokens=9), model=None)
    task_ids = [await stack.submit("Six times seven")]
    assert (await stack.wait(task_ids[0]))["status"] == "completed"
    task_ids.append(await stack.submit("Another one"))
    assert (await stack.wait(task_ids[1]))["status"] == "completed"
    prompt, completion = stack.fake.successful_usage()

    rows = [r for t in task_ids for r in await ledger(stack, t)]
    assert len(rows) == len(stack.fake.requests)
    assert sum(r.prompt_tokens for r in rows) == prompt
    assert sum(r.completion_tokens for r in rows) == completion

    async def usage(**params: str) -> dict:
        resp = await stack.http.get("/usage", params=params, headers=stack.headers)
        assert resp.status_code == 200, resp.text
        return resp.json()

    by_model = await usage(group_by="model")
    assert [i["key"] for i in by_model["items"]] == ["gpt-4o-mini"]
    assert by_model["total"]["prompt_tokens"] == prompt
    assert by_model["total"]["completion_tokens"] == completion
    assert by_model["total"]["llm_calls"] == len(rows)
    assert by_model["total"]["cost_usd"] == float(sum(r.cost_usd for r in rows)) > 0
    by_task = await usage(group_by="task")
    assert sorted(i["key"] for i in by_task["items"]) == sorted(task_ids)
    today = datetime.now(UTC).date().isoformat()
    by_day = await usage(group_by="day", **{"from": today, "to": today})
    assert [i["key"] for i in by_day["items"]] == [today]
    assert by_day["total"]["prompt_tokens"] == prompt
    assert (await usage(group_by="day", **{"from": "2000-01-01", "to": "2000-01-02"}))["items"] == []
    bad = await stack.http.get("/usage", params={"group_by": "colour"}, headers=stack.headers)
    assert bad.status_code == 422
    bad = await stack.http.get("/usage", params={"from": "yesterday"}, headers=stack.headers)
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "from"
