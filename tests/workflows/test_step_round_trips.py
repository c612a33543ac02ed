"""Database round trips of a plan and its steps, counted at the driver (tests/round_trips.py) inside the
worker's activities of one real task: Temporal, PostgreSQL and the fake LLM over HTTP."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pytest
from sqlalchemy.pool import NullPool
from temporalio import activity
from temporalio.client import Client

from durable_orchestrator.data import engine
from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import (
    FINISH_TASK,
    PLAN_TASK,
    RUN_STEP,
    workflow_id_for,
)
from fake_openai import FakeOpenAI, Reply
from tests.agents.helpers import plan_reply
from tests.round_trips import EXECUTIONS, counting
from tests.utils import Stack, running_stack

_create_async_engine = engine.create_async_engine


def _unpooled(url: str, **kwargs: Any) -> Any:
    for pool_option in ("pool_size", "max_overflow", "pool_use_lifo"):
        kwargs.pop(pool_option, None)
    return _create_async_engine(url, poolclass=NullPool, **kwargs)


@pytest.fixture(params=["pooled", "fresh connections"])
async def any_connection_stack(
    request: pytest.FixtureRequest, base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> AsyncIterator[Stack]:
    """A stack as shipped, and one whose every checkout is a new connection: which connection
    a step is handed (one that has met the step's types before, or not) must not change its
    count."""
    unpooled = mock.patch.object(engine, "create_async_engine", _unpooled)
    with unpooled if request.param == "fresh connections" else contextlib.nullcontext():
        # No long-term memory for the planner: its search catches the index up on a timer.
        async with running_stack(base_settings, temporal_client, fake_llm, memory_top_k_for_planner=0) as s:
            yield s


# Statements per activity of a task: its plan, each step, its end.
EXPECTED = {PLAN_TASK: 4, RUN_STEP: 5, FINISH_TASK: 1}


async def test_a_task_is_four_statements_to_plan_five_a_step_one_to_finish_and_no_transaction(
    any_connection_stack: Stack,
) -> None:
    """The plan: read the task with any steps already written; reserve and settle its LLM call;
    write the steps, start the task and report both. A step without tools: read its context;
    start it (with its event) and read its short-term memory and labels; reserve and settle its
    LLM call; finish (with its event and memory entry). The end: the result, the status, its event
    and the result queued for memory. Each statement one round trip, no BEGIN or COMMIT (the
    tests' settings keep circuit breakers quiet)."""
    stack = any_connection_stack
    stack.fake.script(
        plan_reply(("researcher", "Find", []), ("writer", "Write", [0])),
        Reply(content="the facts"),
        Reply(content="the report"),
    )
    by_activity: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
    workflow_ids: set[str] = set()

    def in_plan_or_step(name: str, sql: str) -> None:
        if activity.in_activity():
            info = activity.info()
            if info.activity_type in EXPECTED and info.workflow_id in workflow_ids:
                by_activity[(info.activity_type, info.activity_id)].append((name, sql[:70]))

    with counting(in_plan_or_step):
        task_id = await stack.submit("Count the statements of a step")
        workflow_ids.add(workflow_id_for(task_id))
        task = await stack.wait(task_id)
    assert task["status"] == "completed", task
    assert [s["output"] for s in task["steps"]] == ["the facts", "the report"]
    assert sorted(kind for kind, _ in by_activity) == [FINISH_TASK, PLAN_TASK, RUN_STEP, RUN_STEP], by_activity
    for (kind, _), calls in by_activity.items():
        assert [name for name, _ in calls if name in EXECUTIONS] == ["bind_execute"] * EXPECTED[kind], (
            "\n".join(map(str, calls))
        )
