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
        every = max(0.2, timeout.total_seconds() / 3)

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
