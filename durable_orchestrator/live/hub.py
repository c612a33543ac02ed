"""API side: one listener per process (a LISTEN session, or a Redis subscription) started on
the first subscriber, and an in-process fan-out of deltas to the event streams of their task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import structlog

from durable_orchestrator.data import notify
from durable_orchestrator.live.deltas import CHANNEL, StepDelta
from durable_orchestrator.settings import Settings

log = structlog.get_logger(__name__)

#: Deltas a slow subscriber may have pending before newer ones are dropped for it.
QUEUE_SIZE = 1000
_RECONNECT_SECS = 1.0


class DeltaHub:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._subscribers: dict[str, set[asyncio.Queue[StepDelta]]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @contextlib.asynccontextmanager
    async def subscribe(self, task_id: str) -> AsyncIterator[asyncio.Queue[StepDelta]]:
        """The deltas of `task_id` from now on. Waits (briefly) for the listener on first use,
        so a stream that subscribes before reading the durable events misses nothing between."""
        queue: asyncio.Queue[StepDelta] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.setdefault(task_id, set()).add(queue)
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="delta-hub")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=2.0)
        try:
            yield queue
        finally:
            queues = self._subscribers.get(task_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._subscribers[task_id]

    def dispatch(self, payload: str) -> None:
        delta = StepDelta.decode(payload)
        if delta is None:
            return
        for queue in self._subscribers.get(delta.task_id, ()):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(delta)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None

    async def _run(self) -> None:
        """Keep one listener up; after a lost connection, reconnect (deltas sent meanwhile are
        lost, which the durable events make good)."""
        while True:
            try:
                if self._settings.redis_url:
                    await self._listen_redis(self._settings.redis_url)
                else:
                    await self._listen_postgres(self._settings.database_url or "")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("delta_listener_lost", error=str(exc)[:200])
            self._ready.clear()
            await asyncio.sleep(_RECONNECT_SECS)

    async def _listen_postgres(self, url: str) -> None:
        lost = asyncio.Event()
        conn = await notify.listen(url, CHANNEL, self.dispatch, lost.set)
        self._ready.set()
        try:
            await lost.wait()
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _listen_redis(self, url: str) -> None:
        client = aioredis.from_url(url)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(CHANNEL)
                self._ready.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        self.dispatch(data.decode() if isinstance(data, bytes) else data)
        finally:
            await client.aclose()
