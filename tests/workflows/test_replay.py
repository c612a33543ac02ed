"""Workflow determinism: replay recorded histories with the current workflow code.

The committed histories are written by `python -m tests.workflows.record_histories`; the
fresh ones here come from the same scenarios, so the recorder keeps working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory

from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI
from tests.utils import running_stack
from tests.workflows.record_histories import HISTORIES, SCENARIOS, Scenario, record, replay

CLOSED_AS = {
    "completed": EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    "failed": EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    "cancelled": EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_replay_fresh_history(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, scenario: Scenario
) -> None:
    """A history recorded now replays without non-determinism errors."""
    async with running_stack(
        base_settings, temporal_client, fake_llm, **scenario.settings
    ) as stack:
        history = await record(stack, scenario)
    assert history.events[-1].event_type == CLOSED_AS[scenario.status]
    result = await replay(history)
    assert result.replay_failure is None


COMMITTED = sorted(HISTORIES.glob("*.json"))


def _load(path: Path) -> WorkflowHistory:
    data = json.loads(path.read_text())
    return WorkflowHistory.from_json(data["workflow_id"], data["history"])


def test_every_scenario_has_a_committed_history() -> None:
    for scenario in SCENARIOS:
        history = _load(HISTORIES / f"{scenario.name}.json")
        assert history.events[-1].event_type == CLOSED_AS[scenario.status], scenario.name


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
async def test_replay_committed_history(path: Path) -> None:
    """Histories committed under tests/workflows/histories keep replaying: a workflow change
    that would break running tasks fails here (docs/design.md, "Workflow versioning")."""
    result = await replay(_load(path))
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
