"""How long an LLM call may wait inside an activity attempt (llm/waiting.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from temporalio.testing import ActivityEnvironment

from durable_orchestrator.llm.waiting import wait_allowance


def _env(timeout_secs: float, elapsed_secs: float) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        start_to_close_timeout=timedelta(seconds=timeout_secs),
        started_time=datetime.now(UTC) - timedelta(seconds=elapsed_secs),
    )
    return env


def test_outside_an_activity_the_cap_applies() -> None:
    assert wait_allowance(cap_secs=7.0, call_secs=60) == 7.0


def test_inside_an_activity_the_attempt_keeps_room_for_the_call() -> None:
    allowed = _env(120, 10).run(lambda: wait_allowance(cap_secs=600, call_secs=60))
    assert 49 < allowed <= 50  # 120 - 10 elapsed - 60 for the call


def test_short_timeouts_keep_half_for_the_call_and_run_out() -> None:
    assert 4 < _env(20, 1).run(lambda: wait_allowance(cap_secs=600, call_secs=60)) <= 9
    assert _env(20, 15).run(lambda: wait_allowance(cap_secs=600, call_secs=60)) == 0
    assert _env(120, 0).run(lambda: wait_allowance(cap_secs=3, call_secs=60)) == 3
