"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.app import create_app
from durable_orchestrator.auth.api_keys import create_key
from durable_orchestrator.data.tables import Memory
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI
from worker import build_worker

TERMINAL = {"completed", "failed", "cancelled"}


@contextlib.contextmanager
def service_dir(prefix: str = "orch-test-") -> Iterator[Path]:
    """A temp dir for embedded PostgreSQL data, outside pytest's tmp tree: as root, postgres
    runs as another user that must traverse the path, and every new pytest session resets
    /tmp/pytest-of-<user> to 0700, which would lock a running server out of its own data."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def settings_for_tests(database_url: str, temporal_address: str, llm_base_url: str) -> Settings:
    """The settings every test stack starts from (the `base_settings` fixture, and
    tests/workflows/record_histories.py): fast retries, short step timeout, the fake LLM."""
    return Settings(
        database_url=database_url,
        temporal_address=temporal_address,
        openai_base_url=llm_base_url,
        openai_api_key="test-key",
        model="gpt-4o-mini",
        retry_initial_interval_secs=0.2,
        retry_max_interval_secs=1.0,
        retry_max_attempts=3,
        step_timeout_secs=20,
        log_json=True,
        # Breaker state is shared through the session database; tests that fault a model must
        # not trip it for every later test. Breaker tests turn it on with their own model names.
        circuit_breaker_threshold=0,
        # REDIS_URL is set where the Redis tests run (CI): the Redis backends are used only by
        # the tests that ask for them (the `redis_url` fixture), never by every stack.
        redis_url=None,
        # Every workflow the suite runs goes through Temporal's sandbox, so a non-deterministic
        # call in workflow code fails here even though the shipped worker runs without it.
        workflow_sandbox=True,
    )


@dataclass
class Stack:
    """A running slice of the system: worker on its own task queue + the API app in-process."""

    settings: Settings
    client: Client
    engine: AsyncEngine
    http: httpx.AsyncClient
    fake: FakeOpenAI
    user: str
    key: str
    extra_keys: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    async def new_user(self, user: str | None = None) -> tuple[str, str]:
        user = user or f"user-{uuid.uuid4().hex[:8]}"
        key, _ = await create_key(self.engine, user)
        return user, key

    async def submit(self, description: str = "Write a short report on tea", **body: Any) -> str:
        resp = await self.http.post(
            "/tasks", json={"description": description, **body}, headers=self.headers
        )
        assert resp.status_code == 202, resp.text
        return resp.json()["id"]

    async def get(self, task_id: str) -> dict[str, Any]:
        resp = await self.http.get(f"/tasks/{task_id}", headers=self.headers)
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def wait(
        self, task_id: str, statuses: set[str] | None = None, timeout: float = 30  # noqa: ASYNC109
    ) -> dict[str, Any]:
        statuses = statuses or TERMINAL
        deadline = time.monotonic() + timeout
        while True:
            task = await self.get(task_id)
            if task["status"] in statuses:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {task['status']} after {timeout}s: {task}")
            await asyncio.sleep(0.1)

    async def remembered(self, task_id: str, timeout: float = 30) -> dict[str, Any]:  # noqa: ASYNC109
        """The metadata of the memory made from the task's result, once the worker's memory
        writer has embedded it (it is queued when the task completes and written shortly after)."""
        deadline = time.monotonic() + timeout
        while True:
            async with self.engine.connect() as conn:
                meta = (await conn.execute(
                    sa.select(Memory.meta).where(Memory.task_id == task_id)
                )).scalar()
            if meta is not None:
                return meta
            if time.monotonic() > deadline:
                raise AssertionError(f"the result of task {task_id} never reached memory in {timeout}s")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_stack(
    base: Settings, client: Client, fake: FakeOpenAI, **overrides: Any
) -> AsyncIterator[Stack]:
    settings = base.model_copy(update={"task_queue": f"tq-{uuid.uuid4().hex[:8]}", **overrides})
    async with build_worker(settings, client) as worker:
        run = asyncio.create_task(worker.run())
        app = create_app(settings)
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                    user = f"user-{uuid.uuid4().hex[:8]}"
                    key, _ = await create_key(app.state.engine, user)
                    yield Stack(settings, client, app.state.engine, http, fake, user, key)
        finally:
            await worker.shutdown()
            with contextlib.suppress(Exception):
                await run
