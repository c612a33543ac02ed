"""Worker side: batch a step's text deltas and publish them (PostgreSQL NOTIFY, or Redis
pub/sub when REDIS_URL is set). Publishing never fails or slows a step beyond one send per
flush: an error is logged once per step and the rest of its deltas are dropped."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import notify
from durable_orchestrator.live.deltas import CHANNEL, MAX_TEXT_CHARS, StepDelta
from durable_orchestrator.settings import Settings

log = structlog.get_logger(__name__)


class Publisher(Protocol):
    async def publish(self, payload: str) -> None: ...

    async def close(self) -> None: ...


class PostgresPublisher:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def publish(self, payload: str) -> None:
        await notify.notify(self._engine, CHANNEL, payload)

    async def close(self) -> None:
        return None


class RedisPublisher:
    def __init__(self, url: str) -> None:
        self._redis = aioredis.from_url(url)

    async def publish(self, payload: str) -> None:
        await self._redis.publish(CHANNEL, payload)

    async def close(self) -> None:
        await self._redis.aclose()


def make_publisher(settings: Settings, engine: AsyncEngine) -> Publisher:
    return RedisPublisher(settings.redis_url) if settings.redis_url else PostgresPublisher(engine)


class StepStream:
    """The deltas of one LLM call of one step. The first piece goes out at once (time to first
    token is what a watcher feels); later pieces are batched for `flush_secs`, so a fast model
    costs at most one publish per interval. `close()` sends what is left at once: the step's
    answer is complete, and waiting out the interval would add it to every LLM call."""

    def __init__(
        self, publisher: Publisher, *, task_id: str, step: int, attempt: int, turn: int, flush_secs: float
    ) -> None:
        self._publisher = publisher
        self._key = (task_id, step, attempt, turn)
        self._flush_secs = flush_secs
        self._buffer: list[str] = []
        self._seq = 0
        self._last_flush = float("-inf")
        self._timer: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._broken = False

    async def write(self, text: str) -> None:
        if self._broken:
            return
        self._buffer.append(text)
        if self._timer is not None:
            return
        wait = self._last_flush + self._flush_secs - asyncio.get_running_loop().time()
        if wait <= 0:
            await self._flush()
        else:
            self._timer = asyncio.create_task(self._flush_after(wait))

    async def close(self) -> None:
        self._closing.set()  # cuts the timer's wait short; a publish on the wire completes
        if self._timer is not None:
            await self._timer
        await self._flush()

    async def _flush_after(self, wait: float) -> None:
        # Text written while a flush is on the wire waits for the next interval, in order.
        try:
            while not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._closing.wait()
                await self._flush()
                if not self._buffer:
                    break
                wait = self._flush_secs
        finally:
            self._timer = None

    async def _flush(self) -> None:
        text = "".join(self._buffer)
        self._buffer.clear()
        if not text or self._broken:
            return
        self._last_flush = asyncio.get_running_loop().time()
        task_id, step, attempt, turn = self._key
        for start in range(0, len(text), MAX_TEXT_CHARS):
            delta = StepDelta(task_id, step, attempt, turn, self._seq, text[start:start + MAX_TEXT_CHARS])
            self._seq += 1
            try:
                await self._publisher.publish(delta.encode())
            except Exception as exc:
                self._broken = True
                log.warning("step_delta_publish_failed", task_id=task_id, step=step, error=str(exc)[:200])
                return
