"""Real prices, budgets as reservations and a ledger that loses no paid call, end to end:
real PostgreSQL, real Temporal, the fake LLM over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from genai_prices import Usage, calc_price
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowFailureError

from durable_orchestrator.llm.budget import worst_case
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI, Reply
from fake_openai.plans import is_plan_request
from planner.models import response_format
from planner.planner import system_prompt, user_prompt
from tests.agents.helpers import plan_reply
from tests.utils import Stack, running_stack

SNAPSHOT = "gpt-4o-mini-2024-07-18"


async def _rows(stack: Stack, task_ids: list[str]) -> list[Any]:
    async with stack.engine.connect() as conn:
        return (
            await conn.execute(
                sa.text(
                    "SELECT task_id, purpose, step_index, model, requested_model, status, priced, "
                    "prompt_tokens, completion_tokens, cost_usd, reserved_tokens, call_key "
                    "FROM llm_calls WHERE task_id = ANY(:t) ORDER BY id"
                ),
                {"t": task_ids},
            )
        ).all()


async def _usage(stack: Stack, **params: str) -> dict[str, Any]:
    resp = await stack.http.get("/usage", params=params, headers=stack.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _answered(fake: FakeOpenAI) -> int:
    return sum(r.status == 200 for r in fake.requests)


async def test_a_snapshot_answer_is_priced_like_its_model(stack: Stack) -> None:
    stack.fake.responder = lambda body: Reply(answer_model=SNAPSHOT)
    task = await stack.wait(await stack.submit("Price me"))
    assert task["status"] == "completed", task

    rows = await _rows(stack, [task["id"]])
    assert rows and len(rows) == _answered(stack.fake)
    for r in rows:
        assert (r.model, r.requested_model, r.status, r.priced) == (
            SNAPSHOT,
            "gpt-4o-mini",
            "settled",
            True,
        )
        usage = Usage(input_tokens=r.prompt_tokens, output_tokens=r.completion_tokens)
        expected = Decimal(calc_price(usage, "gpt-4o-mini", provider_id="openai").total_price)
        assert r.cost_usd > 0
        assert abs(r.cost_usd - expected) < Decimal("0.00000002")
    assert task["cost"]["usd"] == float(sum(r.cost_usd for r in rows)) > 0
    report = await _usage(stack, group_by="model")
    assert [(i["key"], i["unpriced_calls"]) for i in report["items"]] == [(SNAPSHOT, 0)]
    assert report["total"]["cost_usd"] > 0


async def test_an_unpriced_model_is_refused_under_a_usd_budget_and_recorded_without(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    async with running_stack(base_settings, temporal_client, fake_llm, model="acme-7b") as stack:
        refused = await stack.wait(await stack.submit("Costly", budget={"max_cost_usd": 5}))
        assert refused["status"] == "failed"
        assert "acme-7b" in refused["error"] and "ORCH_PRICES_FILE" in refused["error"], refused[
            "error"
        ]
        assert fake_llm.requests == []  # refused before the call
        assert await _rows(stack, [refused["id"]]) == []

        free = await stack.wait(await stack.submit("No USD budget"))
        assert free["status"] == "completed", free
        rows = await _rows(stack, [free["id"]])
        assert rows and all(not r.priced and r.cost_usd == 0 for r in rows)
        report = await _usage(stack, group_by="model")
        assert report["total"]["unpriced_calls"] == len(rows) == _answered(fake_llm)


def _wide_plans(steps: int, step_tokens: int):  # type: ignore[no-untyped-def]
    """Every plan has `steps` parallel steps; every step answer uses all its max_tokens."""

    def responder(body: dict) -> Reply | None:
        if is_plan_request(body):
            return plan_reply(*[("writer", f"Part {i}", []) for i in range(steps)])
        return Reply(completion_tokens=step_tokens)

    return responder


async def test_concurrent_tasks_and_parallel_steps_never_overrun_the_daily_cap(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    max_tokens = 200
    cap = 6_000  # a handful of calls' worst case: far fewer than the calls asked for
    fake_llm.responder = _wide_plans(steps=4, step_tokens=max_tokens)
    async with running_stack(
        base_settings,
        temporal_client,
        fake_llm,
        user_daily_max_tokens=cap,
        llm_max_tokens=max_tokens,
        max_parallel_steps=4,
    ) as stack:
        ids = await asyncio.gather(*(stack.submit(f"Crowd task {i}") for i in range(10)))
        tasks = [await stack.wait(t, timeout=90) for t in ids]
        rows = await _rows(stack, list(ids))

    errors = [t["error"] or "" for t in tasks if t["status"] == "failed"]
    assert errors and all("daily token budget" in e for e in errors), errors
    counted = [r for r in rows if r.status != "released"]
    used = sum(r.prompt_tokens + r.completion_tokens for r in counted if r.status == "settled")
    used += sum(r.reserved_tokens for r in counted if r.status == "reserved")
    # Over the cap by at most what one call used beyond its reservation.
    worst_error = max(
        max(0, r.prompt_tokens + r.completion_tokens - r.reserved_tokens) for r in counted
    )
    assert used <= cap + worst_error, (used, cap, worst_error)
    # Every call the provider answered is in the ledger, and nothing else is counted.
    assert len([r for r in counted if r.status == "settled"]) == _answered(fake_llm)


async def test_parallel_steps_of_one_task_stop_at_its_token_cap(stack: Stack) -> None:
    stack.fake.responder = _wide_plans(steps=4, step_tokens=stack.settings.llm_max_tokens)
    cap = 4_000  # the plan and about two steps' worst case
    task = await stack.wait(await stack.submit("Wide task", budget={"max_tokens": cap}), timeout=60)
    assert task["status"] == "failed" and "task token budget" in task["error"], task
    rows = [r for r in await _rows(stack, [task["id"]]) if r.status != "released"]
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows) <= cap
    assert sum(s["status"] == "completed" for s in task["steps"]) < 4


async def test_a_partial_budget_keeps_operator_caps_and_a_higher_one_is_refused(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    async with running_stack(
        base_settings,
        temporal_client,
        fake_llm,
        default_task_max_tokens=50_000,
        default_task_max_cost_usd=1.0,
    ) as stack:

        async def stored_budget(task_id: str) -> dict[str, Any]:
            async with stack.engine.connect() as conn:
                options = (
                    await conn.execute(
                        sa.text("SELECT options FROM tasks WHERE id=:t"), {"t": task_id}
                    )
                ).scalar_one()
            return (json.loads(options) if isinstance(options, str) else options)["budget"]

        partial = await stack.submit("Partial", budget={"max_cost_usd": 0.5})
        assert await stored_budget(partial) == {"max_tokens": 50_000, "max_cost_usd": 0.5}
        empty = await stack.submit("Empty", budget={})
        assert await stored_budget(empty) == {"max_tokens": 50_000, "max_cost_usd": 1.0}

        async with stack.engine.connect() as conn:
            before = (await conn.execute(sa.text("SELECT count(*) FROM tasks"))).scalar_one()
        resp = await stack.http.post(
            "/tasks",
            json={"description": "Greedy", "budget": {"max_tokens": 60_000}},
            headers=stack.headers,
        )
        assert resp.status_code == 422, resp.text
        detail = resp.json()["error"]["details"][0]
        assert detail["field"] == "budget.max_tokens"
        assert "ORCH_DEFAULT_TASK_MAX_TOKENS" in detail["message"]
        async with stack.engine.connect() as conn:
            assert (
                await conn.execute(sa.text("SELECT count(*) FROM tasks"))
            ).scalar_one() == before
        for t in (partial, empty):
            assert (await stack.wait(t))["status"] == "completed"


async def test_a_reset_workflow_records_its_new_calls_under_new_keys(stack: Stack) -> None:
    # The first run's only step is refused by the provider (400: not retried), so the task
    # fails; a `temporal workflow reset` then runs that step again in a new run.
    stack.fake.script(plan_reply(("writer", "Write", [])), Reply(status=400, content="bad request"))
    task = await stack.wait(await stack.submit("Reset me"))
    assert task["status"] == "failed", task
    handle = stack.client.get_workflow_handle(task["workflow_id"])
    first_run = (await handle.describe()).run_id
    first_wft = None
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            first_wft = event.event_id
            break
    assert first_wft is not None
    reset = await stack.client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=stack.client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=task["workflow_id"], run_id=first_run),
            reason="test: run the failed step again",
            workflow_task_finish_event_id=first_wft,
            request_id=str(uuid.uuid4()),
        )
    )
    new_run = stack.client.get_workflow_handle(task["workflow_id"], run_id=reset.run_id)
    with contextlib.suppress(WorkflowFailureError):
        await asyncio.wait_for(new_run.result(), 60)

    rows = await _rows(stack, [task["id"]])
    steps = [r for r in rows if r.purpose == "step"]
    assert [r.status for r in steps] == ["released", "settled"]
    assert first_run in steps[0].call_key and reset.run_id in steps[1].call_key
    assert len([r for r in rows if r.status == "settled"]) == _answered(stack.fake)


async def test_the_planner_s_repair_call_counts_its_first_call(stack: Stack) -> None:
    description = "Plan twice"
    messages = [
        {"role": "system", "content": system_prompt(stack.settings.max_plan_steps)},
        {"role": "user", "content": user_prompt(description, [])},
    ]
    plan_format = response_format(stack.settings.max_plan_steps)
    first = worst_case(
        stack.settings,
        stack.settings.model,
        messages,
        stack.settings.llm_max_tokens,
        [None, plan_format],
    )
    # Room for one planner call's worst case: the first answer is not a plan, and its repair
    # (a longer prompt, on top of what the first call used) does not fit.
    stack.fake.script(Reply(content="no plan here"))
    task = await stack.wait(
        await stack.submit(description, budget={"max_tokens": first.tokens + 50})
    )
    assert task["status"] == "failed" and "task token budget" in task["error"], task
    assert len(stack.fake.requests) == 1
    rows = await _rows(stack, [task["id"]])
    assert [(r.purpose, r.status) for r in rows] == [("plan", "settled")]
