"""How long an LLM call may wait inside the current activity attempt for an open circuit
breaker or for rate capacity, instead of failing the attempt.

A refusal that fails the attempt burns one of the step's Temporal attempts although the step
did nothing wrong, so an outage longer than the retry policy fails every task in flight.
Waiting inside the attempt costs no attempt; the running activity heartbeats (see
`activities/heartbeat.py`), so cancellation and a dead worker are still noticed. The wait is
bounded by what the attempt's start-to-close timeout leaves after keeping room for the call
itself; past that the refusal goes back to Temporal with `next_retry_delay`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import activity


def wait_allowance(*, cap_secs: float, call_secs: float) -> float:
    """Seconds this caller may still wait: at most `cap_secs`, and inside an activity no more
    than its attempt's remaining start-to-close time minus the room a call needs (`call_secs`,
    at most half the timeout, so short timeouts still allow some waiting)."""
    if not activity.in_activity():
        return cap_secs
    info = activity.info()
    timeout = info.start_to_close_timeout or info.schedule_to_close_timeout
    if timeout is None:
        return cap_secs
    total = timeout.total_seconds()
    elapsed = (datetime.now(UTC) - info.started_time).total_seconds()
    room = min(call_secs, total / 2)
    return max(0.0, min(cap_secs, total - elapsed - room))
