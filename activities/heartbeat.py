"""Heartbeat while awaiting something slow, so Temporal notices a dead worker within the
heartbeat timeout and delivers cancellation to a running LLM or tool call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity


@contextlib.asynccontextmanager
async def heartbeating(every: float | None = None) -> AsyncIterator[None]:
    if not activity.in_activity():
        yield
        return
    timeout = activity.info().heartbeat_timeout
    if every is None:
        if timeout is None:
            yield
            return
        # Often, so a cancellation reaches the call within a second or two (the worker's
        # heartbeat throttle decides how many of these actually go to the server).
        every = max(0.2, min(1.0, timeout.total_seconds() / 3))

    async def beat() -> None:
        while True:
            # Sleep first: a call that ends within `every` costs no heartbeat round trip.
            await asyncio.sleep(every)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
