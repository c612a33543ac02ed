"""A provider outage with no fallback model delays tasks and fails none: waiting for an open
breaker happens inside the activity, so only real provider failures spend Temporal attempts.
Real Temporal, real Postgres, the fake LLM over HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid

from temporalio.api.enums.v1 import EventType

from durable_orchestrator.temporal.contracts import workflow_id_for
from fake_openai import Faults
from tests.utils import Stack, running_stack

PROBES = 4  # failed half-open probes the outage lasts for


async def _failed_attempts(stack: Stack, task_id: str) -> int:
    """Attempts of this task's activities that failed (Temporal records only the last start of
    each activity, with its attempt number)."""
    handle = stack.client.get_workflow_handle(workflow_id_for(task_id))
    failed = 0
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            failed += event.activity_task_started_event_attributes.attempt - 1
    return failed


async def test_outage_without_fallback_delays_tasks_and_fails_none(
    base_settings, temporal_client, fake_llm
) -> None:
    model = f"outage-{uuid.uuid4().hex[:6]}"
    async with running_stack(
        base_settings,
        temporal_client,
        fake_llm,
        model=model,
        circuit_breaker_threshold=2,
        circuit_breaker_timeout_secs=1.0,
        # Fewer attempts than the outage has refusals: each refusal spending one would fail
        # every task; the real failures (threshold + probes) fit in it.
        retry_max_attempts=PROBES + 3,
        retry_max_interval_secs=1.0,
    ) as stack:
        fake_llm.faults = Faults(rate_503=1.0, retry_after=None, models={model})
        ids = await asyncio.gather(*(stack.submit(f"Outage task {i}") for i in range(3)))
        deadline = time.monotonic() + 60
        while sum(r.fault == "503" for r in list(fake_llm.requests)) < 2 + PROBES:
            assert time.monotonic() < deadline, "the outage never saw its probes"
            await asyncio.sleep(0.05)
        fake_llm.faults = Faults()  # the provider is back
        tasks = [await stack.wait(t, timeout=90) for t in ids]
        failed_attempts = [await _failed_attempts(stack, t) for t in ids]

    assert [t["status"] for t in tasks] == ["completed"] * 3, [t["error"] for t in tasks]
    reqs = list(fake_llm.requests)
    outage_failures = sum(r.fault == "503" for r in reqs)
    # Every failed attempt is a real provider failure: the refusals of the open breaker (many
    # more of them than attempts, over a breaker open for PROBES seconds) spent none.
    assert sum(failed_attempts) == outage_failures
    assert outage_failures >= 2 + PROBES
