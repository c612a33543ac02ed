"""Processes dying under the orchestrator: the worker (kill -9), the Temporal server and
PostgreSQL restarted mid-run. Every task must still complete, and no step's work may be
recorded twice."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from temporalio.client import Client

from api.app import create_app
from durable_orchestrator.auth.api_keys import create_key
from durable_orchestrator.data import ledger
from durable_orchestrator.data.engine import migrate
from durable_orchestrator.devstack import EmbeddedPostgres, TemporalDevServer
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI, Hold, Reply
from tests.utils import Stack, running_stack, service_dir

# Starts processes of its own: the `system` tier (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("subprocesses")

REPO = Path(__file__).resolve().parents[2]


def _slow_steps(delay: float):  # type: ignore[no-untyped-def]
    def responder(body: dict) -> Reply | None:
        return None if body.get("response_format") else Reply(delay=delay)

    return responder


@contextlib.asynccontextmanager
async def api_only(settings: Settings, client: Client, fake: FakeOpenAI) -> AsyncIterator[Stack]:
    """The API in-process, no worker: the worker runs as a separate process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            user = f"user-{uuid.uuid4().hex[:8]}"
            key, _ = await create_key(app.state.engine, user)
            yield Stack(settings, client, app.state.engine, http, fake, user, key)


def _worker_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": settings.database_url or "",
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "OPENAI_BASE_URL": settings.openai_base_url or "",
        "OPENAI_API_KEY": "test-key",
        "ORCH_TASK_QUEUE": settings.task_queue,
        "CIRCUIT_BREAKER_THRESHOLD": "0",
        "ORCH_LOG_LEVEL": "WARNING",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _in_flight(fake: FakeOpenAI) -> int:
    return sum(r.responded_monotonic is None for r in list(fake.requests))


async def _wait_progress(stack: Stack, ids: list[str], within: float = 60) -> None:
    """Until some step has finished and an LLM call is in flight: mid-run."""
    deadline = time.monotonic() + within
    while True:
        tasks = [await stack.get(t) for t in ids]
        done_steps = sum(s["status"] == "completed" for t in tasks for s in t["steps"])
        if done_steps and _in_flight(stack.fake) and any(t["status"] != "completed" for t in tasks):
            return
        assert time.monotonic() < deadline, [t["status"] for t in tasks]
        await asyncio.sleep(0.1)


async def _ledger_caught_up(stack: Stack, ids: list[str], within: float = 60) -> None:
    """Until every answer the fake has sent is settled in the ledger (the live worker does it;
    the held calls are reserved rows meanwhile)."""
    deadline = time.monotonic() + within
    while True:
        async with stack.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.text("SELECT count(*) FROM llm_calls WHERE task_id = ANY(:t) AND status = 'settled'"),
                    {"t": ids},
                )
            ).scalar_one()
        answered = sum(r.status == 200 for r in list(stack.fake.requests))
        if rows == answered:
            return
        assert time.monotonic() < deadline, f"{answered} answers, {rows} ledger rows"
        await asyncio.sleep(0.1)


async def _assert_all_done_once(stack: Stack, ids: list[str], within: float = 120) -> list:
    tasks = [await stack.wait(t, timeout=within) for t in ids]
    assert [t["status"] for t in tasks] == ["completed"] * len(ids), [t["error"] for t in tasks]
    for t in tasks:
        assert t["steps"] and all(s["status"] == "completed" for s in t["steps"])
    async with stack.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT task_id, purpose, step_index, status FROM llm_calls WHERE task_id = ANY(:t)"
                ),
                {"t": ids},
            )
        ).all()
    settled = [r for r in rows if r.status == "settled"]
    per_step: dict[tuple, int] = defaultdict(int)
    for r in settled:
        per_step[(r.task_id, r.purpose, r.step_index)] += 1
    assert len(per_step) == sum(len(t["steps"]) + 1 for t in tasks)
    # No paid call vanished: every answer the provider sent is a settled row, or a row still
    # reserved because its worker died before settling it; and nothing else is settled.
    answered = sum(r.status == 200 for r in stack.fake.requests)
    pending = sum(r.status == "reserved" for r in rows)
    assert len(settled) <= answered <= len(settled) + pending
    return rows


async def test_worker_killed_mid_task_another_one_finishes(
    base_settings, temporal_client, fake_llm, tmp_path
) -> None:
    settings = base_settings.model_copy(update={"task_queue": f"tq-{uuid.uuid4().hex[:8]}"})
    # The first three step calls are answered; from the fourth on every call (plans too) is
    # held, so the kill finds calls in flight and no answer between the provider and the
    # ledger (an answer a killed process has received but not written yet is lost to any
    # design that records after the call, and would make the ledger check a matter of timing).
    hold, step_calls, holding = Hold(), itertools.count(), [False]

    def responder(body: dict) -> Reply | None:  # type: ignore[type-arg]
        if not holding[0] and (body.get("response_format") or next(step_calls) < 3):
            return None
        holding[0] = True
        return Reply(hold=hold)

    fake_llm.responder = responder
    log = tmp_path / "worker.log"
    first = _worker_process(settings, log)
    second = None
    try:
        async with api_only(settings, temporal_client, fake_llm) as stack:
            ids = [await stack.submit(f"Killed worker task {i}") for i in range(5)]
            await hold.reached(within=90)
            await _ledger_caught_up(stack, ids)
            in_flight = _in_flight(fake_llm)
            first.kill()  # SIGKILL: no graceful shutdown, activities die mid-call
            assert first.wait(10) == -9
            async with asyncio.timeout(30):  # the fake sees the held calls' clients go
                while _in_flight(fake_llm):  # noqa: ASYNC110 - set by the fake's thread
                    await asyncio.sleep(0.05)
            fake_llm.responder = None
            hold.release()
            second = _worker_process(settings, log)
            rows = await _assert_all_done_once(stack, ids)
            # The calls the kill interrupted stay reserved (the provider may have billed them)
            # and count at their worst case, in budgets and in /usage.
            pending = [r for r in rows if r.status == "reserved"]
            assert len(pending) >= in_flight
            spend = [await ledger.spend(stack.engine, t) for t in ids]
            report = (await stack.http.get("/usage", headers=stack.headers)).json()
            assert report["total"]["pending_calls"] == len(pending)
            assert report["total"]["pending_cost_usd"] > 0
            assert spend[0].user_tokens_today > report["total"]["total_tokens"]
        assert in_flight >= 1  # the kill really interrupted running LLM calls
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def test_temporal_server_restarted_mid_run(base_settings, fake_llm, tmp_path) -> None:
    server = TemporalDevServer(tmp_path / "temporal.db", ui=False)
    await asyncio.to_thread(server.start)
    try:
        client = await Client.connect(server.address)
        fake_llm.responder = _slow_steps(0.5)
        async with running_stack(
            base_settings, client, fake_llm, temporal_address=server.address,
            retry_max_attempts=20,
        ) as stack:
            ids = [await stack.submit(f"Temporal restart task {i}") for i in range(5)]
            await _wait_progress(stack, ids)
            await asyncio.to_thread(server.stop)
            assert server.pid is None
            await asyncio.to_thread(server.start)  # same SQLite file, same port
            await _assert_all_done_once(stack, ids)
    finally:
        await asyncio.to_thread(server.stop)


async def test_postgres_restarted_mid_run(base_settings, temporal_client, fake_llm) -> None:
    with service_dir() as root:
        await _postgres_restarted_mid_run(base_settings, temporal_client, fake_llm, root)


async def _postgres_restarted_mid_run(base_settings, temporal_client, fake_llm, root: Path) -> None:  # type: ignore[no-untyped-def]
    # Outside pytest's tmp tree: a pytest session started meanwhile resets it to 0700, which
    # locks the postgres user out of its own data (tests/utils.py, service_dir).
    pg = EmbeddedPostgres(root / "pgdata")
    url = await asyncio.to_thread(pg.start)
    try:
        await asyncio.to_thread(migrate, url)
        fake_llm.responder = _slow_steps(0.5)
        async with running_stack(
            base_settings, temporal_client, fake_llm, database_url=url,
            retry_max_attempts=40, retry_max_interval_secs=1.0,
        ) as stack:
            ids = [await stack.submit(f"Postgres restart task {i}") for i in range(5)]
            await _wait_progress(stack, ids)
            in_flight = [r for r in list(fake_llm.requests) if r.responded_monotonic is None]
            await asyncio.to_thread(pg.stop)
            assert pg.pid is None
            # The outage lasts until the calls in flight have been answered: their activities
            # then find the database gone when they record the result, and must retry.
            deadline = time.monotonic() + 15
            while any(r.responded_monotonic is None for r in in_flight):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            answered_during_outage = sum(r.status == 200 for r in in_flight)
            assert await asyncio.to_thread(pg.start) == url
            await _assert_all_done_once(stack, ids)
        assert answered_during_outage >= 1
    finally:
        await asyncio.to_thread(pg.stop)
