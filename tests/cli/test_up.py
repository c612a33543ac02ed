"""`orchestrator up` as a user runs it: a subprocess on free ports with a temp data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from activities.webhook_activities import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from durable_orchestrator.devstack import free_port
from tests.utils import service_dir

# Starts processes of its own: the `system` tier (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("subprocesses")

REPO = Path(__file__).resolve().parents[2]
# The installed console script when there is one (as a user runs it), else the module.
_SCRIPT = Path(sys.executable).with_name("orchestrator")
ORCHESTRATOR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "durable_orchestrator.cli"]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORCHESTRATOR, *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60,
    )


def _start_up(data_dir: Path, api_port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*ORCHESTRATOR, "up", "--data-dir", str(data_dir), "--api-port", str(api_port),
         "--temporal-port", str(free_port()), "--ui-port", str(free_port())],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    assert proc.stdout is not None
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("up exited early:\n" + "".join(out))
        out.append(line)
        if "Press Ctrl-C to stop" in line:
            return "".join(out)
    raise AssertionError("up not ready:\n" + "".join(out))


def _stop(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return children


def _postgres_running_on(data_dir: Path) -> bool:
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and str(data_dir) in " ".join(p.cmdline()):
                return True
        except psutil.Error:
            continue
    return False


def _wait_done(url: str, key: str, task_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task = httpx.get(f"{url}/tasks/{task_id}", headers={"X-API-Key": key}).json()
        if task["status"] in ("completed", "failed"):
            return task
        time.sleep(0.2)
    raise AssertionError(f"task not done: {task}")


@contextmanager
def _hook_receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    calls: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", calls
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_up_runs_a_task_and_stops_cleanly_then_keeps_tasks() -> None:
    with service_dir() as root, _hook_receiver() as hook:
        _up_twice(root / "data", hook)


def _up_twice(data_dir: Path, hook: tuple[str, list[tuple[dict[str, str], bytes]]]) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS", "OPENAI_BASE_URL", "OPENAI_API_KEY",
                        "ORCH_WEBHOOK_SECRET")}
    env["PYTHONPATH"] = str(REPO)
    # The receiver is on loopback: allowed and opted in explicitly.
    env["ORCH_WEBHOOK_ALLOWED_HOSTS"] = env["ORCH_WEBHOOK_PRIVATE_HOSTS"] = "127.0.0.1"
    hook_url, hook_calls = hook
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start_up(data_dir, port, env)
    try:
        banner = _wait_ready(proc)
        key = (data_dir / "demo-api-key").read_text().strip()
        assert key in banner and f"curl -s -X POST {url}/tasks" in banner
        assert (data_dir / "api-url").read_text().strip() == url  # for the other CLI commands
        resp = httpx.post(f"{url}/tasks", json={"description": "hello from the CLI test",
                                                "webhook_url": hook_url},
                          headers={"X-API-Key": key})
        assert resp.status_code == 202, resp.text
        task_id = resp.json()["id"]
        task = _wait_done(url, key, task_id)
        assert task["status"] == "completed"
        # No configured secret: up generated one for this data dir and signed with it.
        secret = (data_dir / "webhook-secret").read_text().strip()
        deadline = time.monotonic() + 60
        while not hook_calls:
            assert time.monotonic() < deadline, "the webhook was never called"
            time.sleep(0.2)
        headers, body = hook_calls[0]
        assert verify(secret, headers[TIMESTAMP_HEADER.lower()], body, headers[SIGNATURE_HEADER.lower()])
        assert task["steps"] and task["steps"][0]["output"].startswith("offline model:")

        # keys create reaches the running up's Postgres; its last line is a working key.
        created = _cli("keys", "create", "--user", "carol", "--data-dir", str(data_dir), env=env)
        assert created.returncode == 0, created.stderr
        carol = created.stdout.strip().splitlines()[-1]
        assert httpx.get(f"{url}/tasks/{task_id}", headers={"X-API-Key": carol}).status_code == 404
    finally:
        children = _stop(proc)
    assert proc.returncode == 0
    assert children, "up started no children?"
    # Children reaped by their own parents may take a moment on a loaded machine: wait for
    # them to go (bounded) rather than look once after a fixed pause.
    _, alive = psutil.wait_procs(children, timeout=30)
    alive = [c for c in alive if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {alive}"
    assert not _postgres_running_on(data_dir)
    assert not (data_dir / "api-url").exists(), "a clean stop leaves no API URL record"

    # A second `up` on the same data dir still has the task.
    proc = _start_up(data_dir, port, env)
    try:
        _wait_ready(proc)
        key = (data_dir / "demo-api-key").read_text().strip()
        again = httpx.get(f"{url}/tasks/{task_id}", headers={"X-API-Key": key})
        assert again.status_code == 200 and again.json()["status"] == "completed"
        assert (data_dir / "webhook-secret").read_text().strip() == secret  # kept, not regenerated
    finally:
        _stop(proc)
    assert proc.returncode == 0


def test_keys_create_without_running_up_says_how(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(REPO)
    result = _cli("keys", "create", "--user", "x", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 1
    assert "orchestrator up" in result.stderr
    assert "Traceback" not in result.stderr
