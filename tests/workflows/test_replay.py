"""Workflow determinism: replay recorded histories with the current workflow code."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.utils import Stack
from workflows.task_workflow import TaskWorkflow

HISTORIES = Path(__file__).parent / "histories"


async def test_replay_fresh_history(stack: Stack) -> None:
    """A history recorded now replays without non-determinism errors."""
    task_id = await stack.submit("Replay me")
    task = await stack.wait(task_id)
    assert task["status"] == "completed"
    history = await stack.client.get_workflow_handle(task["workflow_id"]).fetch_history()
    result = await Replayer(workflows=[TaskWorkflow]).replay_workflow(history)
    assert result.replay_failure is None


async def test_replay_committed_histories() -> None:
    """Histories committed under tests/workflows/histories keep replaying: a workflow change
    that would break running tasks fails here (use workflow.patched() for such changes)."""
    files = sorted(HISTORIES.glob("*.json"))
    assert files, "no committed histories"
    replayer = Replayer(workflows=[TaskWorkflow])
    for f in files:
        data = json.loads(f.read_text())
        history = WorkflowHistory.from_json(data["workflow_id"], data["history"])
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{f.name}: {result.replay_failure}"
