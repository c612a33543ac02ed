"""The worker as it runs in production: `python -m worker` in its own process.

Covers: JSON log lines carrying task_id and no secrets, the worker's two metrics ports, the
maintenance schedules created on start, and graceful shutdown on SIGTERM with an activity in
flight."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from api.app import create_app
from durable_orchestrator.auth.api_keys import create_key
from durable_orchestrator.devstack import free_port
from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.schedules import JOBS
from fake_openai import FakeOpenAI
from tests.utils import Stack

# Starts processes of its own: the `system` tier (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("subprocesses")

REPO = Path(__file__).resolve().parents[2]
SECRET = f"sk-test-{uuid.uuid4().hex}"


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    temporal_metrics_port: int

    def lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.strip()]


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


@contextlib.asynccontextmanager
async def worker_process(settings: Settings, tmp: Path) -> AsyncIterator[WorkerProc]:
    ports = free_port(), free_port()
    log = tmp / "worker.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": settings.database_url or "",
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "OPENAI_BASE_URL": settings.openai_base_url or "",
        "OPENAI_API_KEY": SECRET,
        "ORCH_TASK_QUEUE": settings.task_queue,
        "ORCH_DATA_DIR": str(tmp / "data"),
        "ORCH_WORKER_METRICS_PORT": str(ports[0]),
        "ORCH_TEMPORAL_METRICS_PORT": str(ports[1]),
        "ORCH_METRICS_BIND_HOST": "127.0.0.1",
        "LOG_LEVEL": "INFO",
    }
    proc = _spawn(env, log)
    wp = WorkerProc(proc, log, *ports)
    try:
        deadline = time.monotonic() + 60
        while not any('"worker_started"' in line for line in wp.lines()):
            assert proc.poll() is None, "worker exited:\n" + log.read_text()[-3000:]
            assert time.monotonic() < deadline, "worker did not start:\n" + log.read_text()[-3000:]
            await asyncio.sleep(0.1)
        yield wp
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(45)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.asynccontextmanager
async def api_for(settings: Settings, client: Client, fake: FakeOpenAI) -> AsyncIterator[Stack]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            user = f"user-{uuid.uuid4().hex[:8]}"
            key, _ = await create_key(app.state.engine, user)
            yield Stack(settings, client, app.state.engine, http, fake, user, key)


def _thread_priorities(pid: int) -> dict[int, int]:
    seen = {}
    for tid in map(int, os.listdir(f"/proc/{pid}/task")):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            seen[tid] = os.getpriority(os.PRIO_PROCESS, tid)
    return seen


def _settings(base: Settings) -> Settings:
    return base.model_copy(update={"task_queue": f"tq-{uuid.uuid4().hex[:8]}"})


async def test_worker_process_logs_metrics_and_schedules(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    settings = _settings(base_settings)
    async with worker_process(settings, tmp_path) as wp, api_for(settings, temporal_client, fake_llm) as stack:
        task_id = await stack.submit("Compare green and black tea")
        task = await stack.wait(task_id, timeout=60)
        assert task["status"] == "completed"

        # Every thread of the worker (Temporal's core, the embedder's, ...) yields the CPU to the API.
        lowered = min(19, os.getpriority(os.PRIO_PROCESS, 0) + Settings().worker_nice)
        seen = _thread_priorities(wp.proc.pid)
        assert len(seen) > 3
        assert set(seen.values()) == {lowered}, seen

        # Schedules were created on start.
        ids = {s.id async for s in await temporal_client.list_schedules()}
        assert {j.schedule_id for j in JOBS} <= ids

        async with httpx.AsyncClient(timeout=5) as http:
            own = (await http.get(f"http://127.0.0.1:{wp.metrics_port}/metrics")).text
            sdk = (await http.get(f"http://127.0.0.1:{wp.temporal_metrics_port}/metrics")).text
        assert 'llm_requests_total{model="gpt-4o-mini",outcome="ok"}' in own
        assert "step_duration_seconds_bucket" in own
        assert 'tasks_finished_total{status="completed"}' in own
        assert "temporal_" in sdk and "temporal_activity_execution_latency" in sdk

        # Every line is one JSON object; the task's lines carry its ids; no secret anywhere.
        lines = wp.lines()
        records = [json.loads(line) for line in lines]  # raises on any non-JSON line
        started = next(r for r in records if r.get("event") == "worker_started")
        assert started["event_loop"] == "uvloop", started
        mine = [r for r in records if r.get("task_id") == task_id]
        events = {r["event"] for r in mine}
        assert {"plan_ready", "step_finished", "task_finished"} <= events, events
        for r in mine:
            assert r["workflow_id"] == f"task-{task_id}"
            assert len(r["trace_id"]) == 32
        assert {r["step"] for r in mine if r["event"] == "step_finished"} == {s["index"] for s in task["steps"]}
        text = wp.log.read_text()
        assert SECRET not in text
        assert "Compare green and black tea" not in text  # no prompts by default


async def test_sigterm_lets_the_running_activity_finish(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    settings = _settings(base_settings)
    async with worker_process(settings, tmp_path) as wp, api_for(settings, temporal_client, fake_llm) as stack:
        fake_llm.latency = 3.0  # every LLM call takes 3 s
        try:
            task_id = await stack.submit("Slow task")
            deadline = time.monotonic() + 60
            while True:
                task = await stack.get(task_id)
                running = [s for s in task["steps"] if s["status"] == "running"]
                if running:
                    break
                assert time.monotonic() < deadline, task
                await asyncio.sleep(0.1)
            index = running[0]["index"]
            wp.proc.send_signal(signal.SIGTERM)
            rc = await asyncio.to_thread(wp.proc.wait, 60)
            assert rc == 0, wp.log.read_text()[-3000:]
            # The step in flight was finished and recorded before the process exited.
            task = await stack.get(task_id)
            step = next(s for s in task["steps"] if s["index"] == index)
            assert step["status"] == "completed", task
            events = [json.loads(line)["event"] for line in wp.lines()]
            assert "worker_stopping" in events
            assert events.index("worker_stopping") < len(events) - 1
        finally:
            fake_llm.latency = 0.0
            with contextlib.suppress(Exception):
                await temporal_client.get_workflow_handle(f"task-{task_id}").terminate("test over")
