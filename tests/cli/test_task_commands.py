"""Task CLI against a running `orchestrator up` (subprocesses, free ports, temp data dir,
offline model): keys create --save, submit --wait, submit + watch, status, list, errors, and
finding the API through the data dir."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from durable_orchestrator.cli.api_client import DEFAULT_API_URL
from durable_orchestrator.devstack import free_port
from tests.cli.test_up import REPO, _cli, _start_up, _stop, _wait_ready

# Starts processes of its own: the `system` tier (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("subprocesses")


@dataclass
class Up:
    url: str
    data_dir: Path
    env: dict[str, str]
    banner: str

    def cli(self, *args: str, unset: tuple[str, ...] = (), **extra_env: str):  # type: ignore[no-untyped-def]
        env = {k: v for k, v in {**self.env, **extra_env}.items() if k not in unset}
        return _cli(*args, "--data-dir", str(self.data_dir), env=env)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("cli")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS", "OPENAI_BASE_URL", "OPENAI_API_KEY", "ORCH_API_KEY")}
    env["PYTHONPATH"] = str(REPO)
    env["XDG_CONFIG_HOME"] = str(tmp / "config")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env["ORCH_API_URL"] = url
    proc = _start_up(tmp / "data", port, env)
    try:
        banner = _wait_ready(proc)
        yield Up(url, tmp / "data", env, banner)
    finally:
        _stop(proc)


def _no_traceback(result) -> None:  # type: ignore[no-untyped-def]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def test_up_prints_every_metrics_address(up: Up) -> None:
    urls = re.findall(r"http://127\.0\.0\.1:\d+/metrics", up.banner)
    assert f"{up.url}/metrics" in urls and len(set(urls)) == 3, up.banner
    for u in set(urls):
        assert _status_once_listening(u) == 200, u


def _status_once_listening(url: str, within: float = 60) -> int:
    # The banner waits for the API only; the worker binds its metrics ports after its imports,
    # which on a loaded machine can come seconds later.
    deadline = time.monotonic() + within
    while True:
        try:
            return httpx.get(url, timeout=5).status_code
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_keys_create_save_then_submit_wait(up: Up) -> None:
    created = up.cli("keys", "create", "--user", "bob", "--save")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    config = json.loads((Path(up.env["XDG_CONFIG_HOME"]) / "orchestrator" / "cli.json").read_text())
    assert config == {"api_key": key, "api_url": up.url}

    result = up.cli("submit", "Compare green and black tea", "--wait", "--timeout", "60")
    _no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "completed" in result.stdout
    task_id = re.search(r"submitted ([0-9a-f]{32})", result.stdout).group(1)  # type: ignore[union-attr]
    # the task belongs to bob: the saved key was used
    resp = httpx.get(f"{up.url}/tasks/{task_id}", headers={"X-API-Key": key})
    assert resp.status_code == 200 and resp.json()["user_id"] == "bob"


def test_submit_then_watch_status_and_list(up: Up) -> None:
    key = (up.data_dir / "demo-api-key").read_text().strip()
    submitted = up.cli("submit", "Write a haiku about queues", ORCH_API_KEY=key)
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{32}", task_id)

    watched = up.cli("watch", task_id, "--timeout", "60", ORCH_API_KEY=key)
    _no_traceback(watched)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert f"task {task_id}: completed" in watched.stdout
    assert re.search(r"step 0 · \w+: completed", watched.stdout)

    status = up.cli("status", task_id, ORCH_API_KEY=key)
    assert status.returncode == 0 and "completed" in status.stdout

    listed = up.cli("list", ORCH_API_KEY=key)
    _no_traceback(listed)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    # The table may fold a 32-character id on a narrow terminal; its start stays on the row.
    rows = [line for line in listed.stdout.splitlines() if task_id[:8] in line]
    assert len(rows) == 1 and "completed" in rows[0], listed.stdout


def test_errors_are_one_readable_line(up: Up) -> None:
    key = (up.data_dir / "demo-api-key").read_text().strip()
    missing = up.cli("status", "0" * 32, ORCH_API_KEY=key)
    assert missing.returncode == 1 and "not found" in missing.stderr
    _no_traceback(missing)
    bad_key = up.cli("status", "0" * 32, ORCH_API_KEY="nope")
    assert bad_key.returncode == 1 and "401" in bad_key.stderr
    _no_traceback(bad_key)
    cancel = up.cli("cancel", "0" * 32, ORCH_API_KEY=key)
    assert cancel.returncode != 0
    _no_traceback(cancel)
    down = up.cli("status", "x", ORCH_API_KEY=key, ORCH_API_URL=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "cannot reach the API" in down.stderr
    _no_traceback(down)


def test_submit_and_status_find_the_api_through_the_data_dir(up: Up, tmp_path: Path) -> None:
    assert up.url != DEFAULT_API_URL
    assert (up.data_dir / "api-url").read_text().strip() == up.url
    # A saved config naming another URL: the data dir's record comes first.
    config = tmp_path / "config" / "orchestrator" / "cli.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"api_url": f"http://127.0.0.1:{free_port()}"}))
    # No ORCH_API_URL and no ORCH_API_KEY: URL and demo key both come from the data dir.
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    unset = ("ORCH_API_URL", "ORCH_API_KEY")

    submitted = up.cli("submit", "Name three teas", unset=unset, **env)
    _no_traceback(submitted)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    task_id = submitted.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{32}", task_id), submitted.stdout

    status = up.cli("status", task_id, unset=unset, **env)
    _no_traceback(status)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"task {task_id}" in status.stdout


def test_a_record_left_by_a_crashed_up_says_no_up_is_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "api-url").write_text(f"http://127.0.0.1:{free_port()}\n")
    (data_dir / "demo-api-key").write_text("orch_stale\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ORCH_API_URL", "ORCH_API_KEY")}
    env["PYTHONPATH"] = str(REPO)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")

    result = _cli("status", "0" * 32, "--data-dir", str(data_dir), env=env)
    _no_traceback(result)
    assert result.returncode == 1
    assert f"no running `orchestrator up` found in {data_dir}" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
