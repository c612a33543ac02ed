"""`orchestrator up`: embedded PostgreSQL + Temporal dev server + worker + API, one command.

The services are real servers whose data lives in the data dir, so a second `up` on the same
dir finds every task again. Worker and API run as child processes; Ctrl-C/SIGTERM stops
everything that was started, in reverse order. While it runs, `<data-dir>/api-url` tells the
other CLI commands where its API is."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.panel import Panel

from durable_orchestrator.auth import api_keys
from durable_orchestrator.cli.api_client import record_api_url
from durable_orchestrator.cli.common import DEFAULT_DATA_DIR, console, fail
from durable_orchestrator.data.engine import create_engine, migrate
from durable_orchestrator.devstack import EmbeddedPostgres, TemporalDevServer, free_port
from durable_orchestrator.devstack.processes import stop_process, wait_http
from durable_orchestrator.settings import Settings, get_settings

DEMO_USER = "demo"
REPO_ROOT = Path(__file__).resolve().parents[2]


async def _valid_or_new_key(url: str, saved: str | None) -> str:
    engine = create_engine(url, pool_size=1)
    try:
        if saved and await api_keys.authenticate(engine, saved):
            return saved
        key, _ = await api_keys.create_key(engine, DEMO_USER, name="created by orchestrator up")
        return key
    finally:
        await engine.dispose()


def _demo_key(url: str, key_file: Path) -> str:
    """Reuse the key saved by an earlier `up` while it still works; otherwise make one."""
    saved = key_file.read_text().strip() if key_file.exists() else None
    key = asyncio.run(_valid_or_new_key(url, saved))
    if key != saved:
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
    return key


def data_dir_webhook_secret(data_dir: Path) -> str:
    """The data dir's own webhook secret, generated on first use and kept (mode 0600) so
    receivers can keep verifying signatures across restarts."""
    path = data_dir / "webhook-secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _spawn(args: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    # Own process group: a terminal's Ctrl-C reaches only us, and we stop children in order.
    log = log_file.open("ab")
    return subprocess.Popen(
        args, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_api(url: str, proc: subprocess.Popen[bytes], timeout: float, log_file: Path) -> None:
    try:
        wait_http(url, proc, timeout)
    except RuntimeError:
        raise fail(f"the API exited during startup; see {log_file}") from None
    except TimeoutError:
        raise fail(f"the API did not become ready within {timeout:g}s; see {log_file}") from None


class _StopRequest:
    """Set by SIGTERM or SIGINT. Only a flag: an exception raised at an arbitrary point
    (KeyboardInterrupt) could land halfway through starting or stopping a child and leave it
    running. A signal during startup therefore takes effect when `_supervise` begins, and a
    second one during the stop changes nothing."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum: int, _frame: object) -> None:
        self.requested = True


@dataclass
class _Running:
    """What the banner shows."""

    api_url: str
    temporal_address: str
    ui_url: str | None  # set only when we started the Temporal dev server
    postgres: str
    worker_metrics_url: str
    temporal_metrics_url: str
    logs: Path
    key_file: Path
    key: str = field(repr=False)  # the demo API key: shown once in the banner, never in a repr


def _start_database(settings: Settings, data_dir: Path, stack: ExitStack) -> str:
    """DATABASE_URL, or the embedded PostgreSQL of the data dir; migrated to head either way."""
    db_url = settings.database_url
    if not db_url:
        pg = EmbeddedPostgres(data_dir / "pg")
        db_url = pg.start()
        stack.callback(pg.stop)
    migrate(db_url)
    return db_url


def _start_temporal(
    settings: Settings, data_dir: Path, stack: ExitStack,
    *, port: int, ui_port: int, ui: bool, log_file: Path,
) -> tuple[str, str | None]:
    """TEMPORAL_ADDRESS, or a dev server on the data dir's SQLite file: (address, UI URL)."""
    if settings.temporal_address:
        return settings.temporal_address, None
    server = TemporalDevServer(
        data_dir / "temporal.db", port=port, ui_port=ui_port if ui else None, ui=ui, log_file=log_file
    )
    address = server.start()
    stack.callback(server.stop)
    return address, server.ui_url


def _child_env(
    db_url: str, temporal_address: str, host: str, wm_port: int, tm_port: int
) -> dict[str, str]:
    """The worker's and the API's environment: ours, plus where the services are."""
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        # Metrics: the worker serves ours and the Temporal SDK's on two ports.
        "ORCH_WORKER_METRICS_PORT": str(wm_port),
        "ORCH_TEMPORAL_METRICS_PORT": str(tm_port),
    }
    env.setdefault("ORCH_METRICS_BIND_HOST", host)
    return env


def _start_worker(env: dict[str, str], logs: Path, stack: ExitStack) -> subprocess.Popen[bytes]:
    worker = _spawn([sys.executable, "-m", "worker"], env, logs / "worker.log")
    stack.callback(stop_process, worker, 35)
    return worker


def _start_api(
    env: dict[str, str], host: str, port: int, logs: Path, stack: ExitStack
) -> tuple[subprocess.Popen[bytes], str]:
    """uvicorn on host:port, waited for until /healthz answers; returns the process and its URL."""
    api = _spawn(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", host, "--port", str(port),
         "--no-access-log", "--timeout-graceful-shutdown", "10"],
        env,
        logs / "api.log",
    )
    stack.callback(stop_process, api, 15)
    url = f"http://{host}:{port}"
    _wait_api(f"{url}/healthz", api, 60, logs / "api.log")
    return api, url


def _record_api_url(data_dir: Path, host: str, port: int, stack: ExitStack) -> None:
    # A wildcard bind address says where the API listens, not where to connect.
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    path = record_api_url(data_dir, f"http://{reachable}:{port}")
    # Registered after the API's stop, so unwound before it: no record outlives a clean stop.
    stack.callback(path.unlink, missing_ok=True)


def _print_banner(run: _Running, settings: Settings, started: float) -> None:
    llm = (
        "offline model (set OPENAI_BASE_URL / OPENAI_API_KEY for a real one)"
        if settings.use_offline_llm
        else settings.openai_base_url or "OpenAI"
    )
    api_url, key = run.api_url, run.key
    lines = [
        f"[bold]API[/bold]            {api_url}   (docs: {api_url}/docs)",
        f"[bold]Temporal[/bold]       {run.temporal_address}" + ("   (embedded dev server)" if run.ui_url else ""),
        f"[bold]Temporal Web UI[/bold] {run.ui_url or 'n/a'}",
        f"[bold]PostgreSQL[/bold]     {run.postgres}",
        f"[bold]LLM[/bold]            {llm}",
        f"[bold]Metrics[/bold]        {api_url}/metrics (API)",
        f"               {run.worker_metrics_url} (worker)",
        f"               {run.temporal_metrics_url} (Temporal SDK)",
        f"[bold]Logs[/bold]           {run.logs}",
        "",
        f"API key for user '{DEMO_USER}' (saved in {run.key_file}):",
        key,
    ]
    console.print(Panel("\n".join(lines), title=f"orchestrator ready in {time.monotonic() - started:.1f}s"))
    console.print("Try it:", style="bold")
    # soft_wrap: long commands stay on one line so they paste as they are.
    console.print(
        f"curl -s -X POST {api_url}/tasks -H 'X-API-Key: {key}' -H 'Content-Type: application/json' "
        "-d '{\"description\": \"Compare green and black tea\"}'",
        soft_wrap=True, highlight=False, markup=False,
    )
    console.print(f"curl -s {api_url}/tasks/<id> -H 'X-API-Key: {key}'", soft_wrap=True, highlight=False, markup=False)
    # Tests and the benchmarks' startup suite wait for this line as the sign of readiness.
    console.print("Press Ctrl-C to stop.", style="dim")


def _supervise(children: dict[str, subprocess.Popen[bytes]], stop: _StopRequest) -> None:
    """Until a signal asks us to stop, or a child exits on its own."""
    while not stop.requested:
        for name, proc in children.items():
            if proc.poll() is not None:
                console.print(f"[red]the {name} exited (code {proc.returncode}); stopping[/red]")
                stop.requested = True
        time.sleep(0.2)


def up(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", envvar="ORCH_DATA_DIR", help="Where state is kept."),
    api_port: int = typer.Option(8000, "--api-port"),
    temporal_port: int = typer.Option(7233, "--temporal-port"),
    ui_port: int = typer.Option(8233, "--ui-port"),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface the API binds to."),
    ui: bool = typer.Option(True, "--ui/--no-ui", help="Serve the Temporal Web UI."),
    worker_metrics_port: int | None = typer.Option(
        None, "--worker-metrics-port", help="Worker's Prometheus port (default: ORCH_WORKER_METRICS_PORT or a free one)."
    ),
    temporal_metrics_port: int | None = typer.Option(
        None, "--temporal-metrics-port", help="Temporal SDK metrics port (default: ORCH_TEMPORAL_METRICS_PORT or a free one)."
    ),
) -> None:
    """Run the whole system: PostgreSQL, Temporal, worker and API."""
    settings = get_settings()
    data_dir = data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    stop = _StopRequest()
    with ExitStack() as stack:
        db_url = _start_database(settings, data_dir, stack)
        temporal_address, ui_url = _start_temporal(
            settings, data_dir, stack,
            port=temporal_port, ui_port=ui_port, ui=ui, log_file=logs / "temporal.log",
        )
        key_file = data_dir / "demo-api-key"
        key = _demo_key(db_url, key_file)
        wm_port = worker_metrics_port or settings.worker_metrics_port or free_port()
        tm_port = temporal_metrics_port or settings.temporal_metrics_port or free_port()
        env = _child_env(db_url, temporal_address, host, wm_port, tm_port)
        if not settings.webhook_secret:
            env["ORCH_WEBHOOK_SECRET"] = data_dir_webhook_secret(data_dir)
        worker = _start_worker(env, logs, stack)
        api, api_url = _start_api(env, host, api_port, logs, stack)
        _record_api_url(data_dir, host, api_port, stack)
        postgres = "DATABASE_URL" if settings.database_url else f"embedded, {data_dir / 'pg'}"
        metrics = (f"http://{host}:{wm_port}/metrics", f"http://{host}:{tm_port}/metrics")
        _print_banner(_Running(api_url, temporal_address, ui_url, postgres, *metrics, logs, key_file, key),
                      settings, started)
        _supervise({"worker": worker, "API": api}, stop)
        console.print("stopping…")
    console.print("stopped.")
