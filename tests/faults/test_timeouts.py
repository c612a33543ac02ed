"""Timeouts: a step that outlives its start-to-close timeout is retried then fails the task;
a task that outlives its deadline fails with that reason. Never stuck in `running`."""

from __future__ import annotations

import asyncio
import time

from fake_openai import Reply
from tests.utils import running_stack


def _slow_steps(delay: float):  # type: ignore[no-untyped-def]
    def responder(body: dict) -> Reply | None:
        return None if body.get("response_format") else Reply(delay=delay)

    return responder


async def test_step_timeout_retries_then_fails_the_task(base_settings, temporal_client, fake_llm) -> None:
    fake_llm.responder = _slow_steps(30.0)
    async with running_stack(
        base_settings, temporal_client, fake_llm, step_timeout_secs=2, retry_max_attempts=2,
        llm_timeout_secs=60,
    ) as stack:
        task = await stack.wait(await stack.submit("Explain volcanoes"), timeout=40)
    assert task["status"] == "failed"
    assert "timeout" in task["error"].lower() or "timed out" in task["error"].lower(), task["error"]
    first_step = [r for r in fake_llm.requests if not r.body.get("response_format")]
    assert len({r.received_monotonic for r in first_step}) >= 2  # it was retried once


async def test_task_deadline_fails_the_task_with_the_reason(base_settings, temporal_client, fake_llm) -> None:
    fake_llm.responder = _slow_steps(8.0)
    async with running_stack(
        base_settings, temporal_client, fake_llm, task_deadline_secs=3, step_timeout_secs=60,
    ) as stack:
        task = await stack.wait(await stack.submit("Explain earthquakes"), timeout=30)
    assert task["status"] == "failed"
    assert "deadline exceeded" in task["error"]
    assert {s["status"] for s in task["steps"]} <= {"skipped", "completed"}
    # The step's LLM call was interrupted (heartbeat → cancellation): when the fake got round
    # to answering, the client had gone.
    step_reqs = [r for r in fake_llm.requests if not r.body.get("response_format")]
    deadline = time.monotonic() + 20
    while any(r.responded_monotonic is None for r in step_reqs):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert step_reqs and all(r.status is None for r in step_reqs)
