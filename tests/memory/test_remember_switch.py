"""ORCH_MEMORY_REMEMBER_RESULTS=false: completed tasks are not embedded or stored."""

from __future__ import annotations

from temporalio.testing import ActivityEnvironment

from activities.memory_activities import MemoryActivities
from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import RememberInput


async def test_remember_result_off_touches_nothing(base_settings: Settings) -> None:
    settings = base_settings.model_copy(update={"memory_remember_results": False})
    # No memory service at all: with the switch off the activity must not reach for one.
    acts = MemoryActivities(memory=None, settings=settings)  # type: ignore[arg-type]
    assert await ActivityEnvironment().run(acts.remember_result, RememberInput(task_id="t")) == 0
