"""The benchmarks' own PostgreSQL access, with asyncpg and plain SQL: watching tasks finish,
bulk-loading memories, scratch databases. This is tooling reading the product's tables from
outside; the product's rule that SQL lives in its data layer is about the product."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

import asyncpg

_DRIVER_PREFIXES = ("postgresql+asyncpg://", "postgresql+psycopg://", "postgres://")


def libpq_url(url: str) -> str:
    """The URL as asyncpg.connect wants it (the embedded server hands out SQLAlchemy URLs)."""
    for prefix in _DRIVER_PREFIXES:
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def with_database(url: str, name: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def create_database(url: str, name: str) -> None:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(url: str, name: str) -> None:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _wait_for(db_url: str, query: str, arg: str, limit_s: float, interval: float) -> bool:
    """Poll `query` (one boolean, one parameter) until it is true; False when it is not within
    `limit_s`."""
    conn = await asyncpg.connect(libpq_url(db_url))
    try:
        deadline = asyncio.get_running_loop().time() + limit_s
        while not await conn.fetchval(query, arg):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(interval)
        return True
    finally:
        await conn.close()


async def wait_for_memory_of(db_url: str, task_id: str, limit_s: float) -> bool:
    """Until the task's result is in long-term memory (the worker's embedding model is then
    loaded); False when it is not there within `limit_s`."""
    return await _wait_for(
        db_url, "SELECT EXISTS (SELECT 1 FROM memories WHERE task_id = $1)", task_id, limit_s, 0.1
    )


async def wait_queue_drained(db_url: str, task_queue: str, limit_s: float) -> bool:
    """Until no task of `task_queue` is unfinished; False when some still are after `limit_s`."""
    return await _wait_for(
        db_url,
        "SELECT NOT EXISTS (SELECT 1 FROM tasks WHERE task_queue = $1 "
        "AND status NOT IN ('completed', 'failed', 'cancelled'))",
        task_queue, limit_s, 0.2,
    )


class DoneWatcher:
    """Completion times of many tasks from Postgres (tasks.updated_at of the terminal write), one
    query per `interval` for all tasks in flight: polling each task over HTTP would load the
    API and the machine with hundreds of GETs per second and measure the poller, not the product."""

    QUERY = (
        "SELECT id, status, extract(epoch FROM updated_at)::float8 AS done_epoch FROM tasks "
        "WHERE id = ANY($1::text[]) AND status IN ('completed', 'failed', 'cancelled')"
    )

    def __init__(self, db_url: str, interval: float = 0.05) -> None:
        self.db_url = db_url
        self.interval = interval
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DoneWatcher:
        self._conn = await asyncpg.connect(libpq_url(self.db_url))
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self._conn is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._conn.close()

    def done_at(self, task_id: str) -> asyncio.Future[float]:
        """Resolves to the epoch time at which the task was marked completed."""
        fut = asyncio.get_running_loop().create_future()
        self.waiting[task_id] = fut
        return fut

    async def _run(self) -> None:
        assert self._conn is not None
        while True:
            if self.waiting:
                try:
                    rows = await self._conn.fetch(self.QUERY, list(self.waiting))
                except Exception as err:  # fail the waiters instead of leaving them hanging
                    for fut in self.waiting.values():
                        if not fut.done():
                            fut.set_exception(err)
                    self.waiting.clear()
                    raise
                for row in rows:
                    fut = self.waiting.pop(row["id"])
                    if fut.done():
                        continue
                    if row["status"] == "completed":
                        fut.set_result(float(row["done_epoch"]))
                    else:
                        fut.set_exception(RuntimeError(f"task {row['id']} ended {row['status']}"))
            await asyncio.sleep(self.interval)
