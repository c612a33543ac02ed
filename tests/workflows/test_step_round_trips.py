"""Database round trips of a step, counted at the driver (tests/round_trips.py) inside the
worker's activities of one real task: Temporal, PostgreSQL and the fake LLM over HTTP."""

from __future__ import annotations

import collections

from temporalio import activity

from durable_orchestrator.temporal.contracts import RUN_STEP, workflow_id_for
from fake_openai import Reply
from tests.agents.helpers import plan_reply
from tests.round_trips import EXECUTIONS, counting
from tests.utils import Stack


async def test_a_step_without_tools_is_seven_statements_and_no_transaction(stack: Stack) -> None:
    """Read its context; start (with its event); read short-term memory and provenance; reserve
    and settle its LLM call; finish (with its event and memory entry): seven statements, each
    one round trip, no BEGIN or COMMIT (the tests' settings keep circuit breakers quiet)."""
    stack.fake.script(
        plan_reply(("researcher", "Find", []), ("writer", "Write", [0])),
        Reply(content="the facts"),
        Reply(content="the report"),
    )
    by_activity: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    workflow_ids: set[str] = set()

    def in_run_step(name: str, sql: str) -> None:
        if activity.in_activity():
            info = activity.info()
            if info.activity_type == RUN_STEP and info.workflow_id in workflow_ids:
                by_activity[info.activity_id].append((name, sql[:70]))

    with counting(in_run_step):
        task_id = await stack.submit("Count the statements of a step")
        workflow_ids.add(workflow_id_for(task_id))
        task = await stack.wait(task_id)
    assert task["status"] == "completed", task
    assert [s["output"] for s in task["steps"]] == ["the facts", "the report"]
    assert len(by_activity) == 2, by_activity
    for calls in by_activity.values():
        assert [name for name, _ in calls if name in EXECUTIONS] == ["bind_execute"] * 7, calls
