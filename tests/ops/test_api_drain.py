"""The API drains in-flight requests on SIGTERM (uvicorn --timeout-graceful-shutdown, as `up`
and compose run it): a request whose body is still arriving when the signal lands is completed,
then the process exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from durable_orchestrator.auth.api_keys import create_key
from durable_orchestrator.devstack import free_port
from durable_orchestrator.settings import Settings

# Starts processes of its own: the `system` tier (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("subprocesses")

REPO = Path(__file__).resolve().parents[2]


def _start_api(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": settings.database_url or "",
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "ORCH_TASK_QUEUE": f"tq-{uuid.uuid4().hex[:8]}",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
             "--timeout-graceful-shutdown", "10"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail("API did not start:\n" + log.read_text()[-2000:])


def _post_in_two_halves_with_sigterm_between(port: int, key: str, proc: subprocess.Popen[bytes], log: Path) -> str:
    body = json.dumps({"description": "arrives in two halves"}).encode()
    head = (
        f"POST /tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body[:10])  # the request is in flight: headers in, body not done
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.poll() is None, "the API exited with a request in flight"
        sock.sendall(body[10:])
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 202"), raw[:500]
    task_id = json.loads(rest.partition(b"\r\n\r\n")[2])["id"]
    # uvicorn re-raises the signal it handled once shutdown is complete, so the parent sees
    # "terminated by SIGTERM" after a clean drain (0 on older uvicorn versions).
    assert proc.wait(30) in (0, -signal.SIGTERM), log.read_text()[-2000:]
    text = log.read_text()
    assert "Application shutdown complete." in text and '"POST /tasks HTTP/1.1\\" 202' in text
    # new connections are refused once it has stopped
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    return task_id


async def test_sigterm_drains_an_in_flight_request(
    base_settings: Settings, engine: AsyncEngine, temporal_client: Client, tmp_path: Path
) -> None:
    key, _ = await create_key(engine, f"drain-{uuid.uuid4().hex[:8]}")
    port = free_port()
    log = tmp_path / "api.log"
    proc = _start_api(base_settings, port, log)
    task_id = None
    try:
        await asyncio.to_thread(_wait_healthy, f"http://127.0.0.1:{port}", proc, log)
        task_id = await asyncio.to_thread(_post_in_two_halves_with_sigterm_between, port, key, proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if task_id:
            await temporal_client.get_workflow_handle(f"task-{task_id}").terminate("test over")
