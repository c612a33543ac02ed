"""Record the replay histories committed in tests/workflows/histories/, from real runs.

    python -m tests.workflows.record_histories               # every scenario
    python -m tests.workflows.record_histories task_cancelled  # only the named ones

Run it from the repository root with the project's interpreter. It starts what it needs in a
temp dir and stops it on exit: an embedded PostgreSQL (migrated), a Temporal dev server and the
fake LLM server. Each scenario then goes through the REST API and a real worker exactly as in
the tests (`tests.utils.running_stack`); the recorder waits for the workflow to close, checks
that the history replays with the current TaskWorkflow and writes `histories/<scenario>.json`
as `{"workflow_id": ..., "history": ...}`.

When: until the first tagged release, whenever TaskWorkflow's command sequence changes —
regenerate and commit the files. From the first release on, never overwrite a committed
history (it is what a running workflow looks like): add new ones beside it (docs/design.md,
"Workflow versioning"). tests/workflows/test_replay.py runs these same scenarios fresh, so the
recorder cannot rot unnoticed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.worker import Replayer, WorkflowReplayResult

from durable_orchestrator.data.engine import migrate
from durable_orchestrator.devstack import EmbeddedPostgres, TemporalDevServer
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI, Reply
from tests.agents.helpers import plan_reply
from tests.utils import Stack, running_stack, service_dir, settings_for_tests
from workflows.task_workflow import TaskWorkflow

HISTORIES = Path(__file__).parent / "histories"
T = TypeVar("T")
EMAIL = {"to": "boss@example.com", "subject": "Weekly report", "body": "All green."}


@dataclass(frozen=True)
class Scenario:
    name: str  # the history's file name, without .json
    status: str  # the task's final status in Postgres
    start: Callable[[Stack], Awaitable[str]]  # submits the task, drives it; returns its id
    settings: dict[str, Any] = field(default_factory=dict)  # overrides for this scenario's stack


async def _three_steps(stack: Stack) -> str:
    stack.fake.script(
        plan_reply(
            ("researcher", "Gather facts on green and black tea", []),
            ("analyst", "Compare caffeine and taste", [0]),
            ("writer", "Write the short report", [1]),
        )
    )
    return await stack.submit("Compare green and black tea for a short report")


async def _tool_approval(stack: Stack) -> str:
    stack.fake.script(
        plan_reply(("writer", "Email the report", [])),
        Reply(tool_calls=[("send_email", EMAIL)]),
        Reply(content="Done."),
    )
    task_id = await stack.submit("Send the weekly report by email")
    approval_id = await _until(stack, task_id, _pending_approval)
    resp = await stack.http.post(
        f"/tasks/{task_id}/approvals/{approval_id}",
        json={"decision": "approve", "comment": "ok to send"},
        headers=stack.headers,
    )
    assert resp.status_code == 200, resp.text
    return task_id


async def _step_fails(stack: Stack) -> str:
    stack.fake.script(
        plan_reply(("researcher", "Gather facts", []), ("writer", "Write it up", [0])),
        Reply(status=400, content="bad request: model does not exist"),  # not retryable
    )
    return await stack.submit("Summarise the history of the bicycle")


async def _cancelled(stack: Stack) -> str:
    stack.fake.script(
        plan_reply(("researcher", "Gather facts", []), ("writer", "Write it up", [0])),
        Reply(delay=20),  # the first step's call is still running when the cancel arrives
    )
    task_id = await stack.submit("Write a long essay on the history of tea")
    await _until(stack, task_id, _step_in_flight)
    resp = await stack.http.post(f"/tasks/{task_id}/cancel", headers=stack.headers)
    assert resp.status_code == 202, resp.text
    return task_id


async def _long_tool_loop(stack: Stack) -> str:
    stack.fake.script(
        plan_reply(("analyst", "Add up the figures", [])),
        *[Reply(tool_calls=[("calculator", {"expression": f"{t}*10"})]) for t in range(3)],
        Reply(content="Total: 30."),
    )
    return await stack.submit("Add up the figures")


SCENARIOS = [
    Scenario("task_3_steps", "completed", _three_steps),
    Scenario("task_tool_approval", "completed", _tool_approval),
    Scenario("task_step_failed", "failed", _step_fails),
    Scenario("task_cancelled", "cancelled", _cancelled),
    # The history kept is the last run's: one that started from a hand-over (`resume`).
    Scenario("task_continued_as_new", "completed", _long_tool_loop, {"continue_as_new_events": 25}),
]


async def _pending_approval(stack: Stack, task_id: str) -> str | None:
    resp = await stack.http.get(f"/tasks/{task_id}/approvals", headers=stack.headers)
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    return items[0]["approval_id"] if items else None


async def _step_in_flight(stack: Stack, task_id: str) -> bool | None:
    task = await stack.get(task_id)
    step_calls = [r for r in stack.fake.requests if r.body and not r.body.get("response_format")]
    return (any(s["status"] == "running" for s in task["steps"]) and bool(step_calls)) or None


async def _until(
    stack: Stack, task_id: str, probe: Callable[[Stack, str], Awaitable[T | None]], within: float = 30
) -> T:
    deadline = time.monotonic() + within
    while (found := await probe(stack, task_id)) is None:
        assert time.monotonic() < deadline, f"{probe.__name__} never held for task {task_id}"
        await asyncio.sleep(0.1)
    return found


async def record(stack: Stack, scenario: Scenario) -> WorkflowHistory:
    """Run `scenario` on `stack` and return its workflow's history once the workflow closed."""
    task_id = await scenario.start(stack)
    task = await stack.wait(task_id, timeout=60)
    assert task["status"] == scenario.status, task
    handle = stack.client.get_workflow_handle(task["workflow_id"])
    # Postgres says the task ended before the workflow closes (the webhook may come after).
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    history = await handle.fetch_history()
    if scenario.settings.get("continue_as_new_events"):
        started = history.events[0].workflow_execution_started_event_attributes
        assert started.continued_execution_run_id, f"{scenario.name}: never continued as new"
    return history


async def replay(history: WorkflowHistory) -> WorkflowReplayResult:
    return await Replayer(workflows=[TaskWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )


def write(name: str, history: WorkflowHistory) -> Path:
    HISTORIES.mkdir(exist_ok=True)
    path = HISTORIES / f"{name}.json"
    data = {"workflow_id": history.workflow_id, "history": history.to_json_dict()}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def record_all(scenarios: list[Scenario]) -> None:
    with service_dir("orch-histories-") as root, FakeOpenAI() as fake:
        pg = EmbeddedPostgres(root / "pgdata")
        temporal = TemporalDevServer(root / "temporal.db", ui=False)
        try:
            url = pg.start()
            migrate(url)  # alembic runs its own event loop: before ours starts
            temporal.start()
            settings = settings_for_tests(url, temporal.address, fake.base_url)
            asyncio.run(_record_on(settings, fake, scenarios))
        finally:
            temporal.stop()
            pg.stop()


async def _record_on(settings: Settings, fake: FakeOpenAI, scenarios: list[Scenario]) -> None:
    client = await Client.connect(settings.temporal_address)
    for scenario in scenarios:
        async with running_stack(settings, client, fake, **scenario.settings) as stack:
            fake.reset()
            history = await record(stack, scenario)
            result = await replay(history)
            assert result.replay_failure is None, f"{scenario.name}: {result.replay_failure}"
            path = write(scenario.name, history)
            print(f"{path}: {len(history.events)} events, task {scenario.status}")


def main() -> None:
    by_name = {s.name: s for s in SCENARIOS}
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"which to record (default: all): {', '.join(by_name)}")
    chosen = parser.parse_args().scenarios
    if unknown := [n for n in chosen if n not in by_name]:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(by_name)}")
    record_all([by_name[n] for n in chosen] or SCENARIOS)


if __name__ == "__main__":
    main()
