"""`orchestrator up`: embedded PostgreSQL + Temporal dev server + worker + API, one command.

The services are real servers whose data lives in the data dir, so a second `up` on the same
dir finds every task again. Worker and API run as child processes; Ctrl-C/SIGTERM stops
everything that was started, in reverse order."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import typer
from rich.panel import Panel

from durable_orchestrator.auth import api_keys
from durable_orchestrator.cli.common import DEFAULT_DATA_DIR, console, fail
from durable_orchestrator.data.engine import create_engine, migrate
from durable_orchestrator.devstack import EmbeddedPostgres, TemporalDevServer, free_port
from durable_orchestrator.devstack.processes import stop_process, wait_http
from durable_orchestrator.settings import get_settings

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
    stop_requested = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    with ExitStack() as stack:
        db_url = settings.database_url
        if not db_url:
            pg = EmbeddedPostgres(data_dir / "pg")
            db_url = pg.start()
            stack.callback(pg.stop)
        migrate(db_url)

        temporal_address = settings.temporal_address
        ui_url = None
        if not temporal_address:
            server = TemporalDevServer(
                data_dir / "temporal.db",
                port=temporal_port,
                ui_port=ui_port if ui else None,
                ui=ui,
                log_file=logs / "temporal.log",
            )
            temporal_address = server.start()
            ui_url = server.ui_url
            stack.callback(server.stop)

        key = _demo_key(db_url, data_dir / "demo-api-key")
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "TEMPORAL_ADDRESS": temporal_address,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        # Metrics: the worker serves ours and the Temporal SDK's on two ports.
        wm_port = worker_metrics_port or settings.worker_metrics_port or free_port()
        tm_port = temporal_metrics_port or settings.temporal_metrics_port or free_port()
        env["ORCH_WORKER_METRICS_PORT"] = str(wm_port)
        env["ORCH_TEMPORAL_METRICS_PORT"] = str(tm_port)
        env.setdefault("ORCH_METRICS_BIND_HOST", host)
        worker = _spawn([sys.executable, "-m", "worker"], env, logs / "worker.log")
        stack.callback(stop_process, worker, 35)
        api = _spawn(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", host, "--port", str(api_port),
             "--no-access-log", "--timeout-graceful-shutdown", "10"],
            env,
            logs / "api.log",
        )
        stack.callback(stop_process, api, 15)
        api_url = f"http://{host}:{api_port}"
        _wait_api(f"{api_url}/healthz", api, 60, logs / "api.log")

        llm = "offline model (set OPENAI_BASE_URL / OPENAI_API_KEY for a real one)" if settings.use_offline_llm else settings.openai_base_url or "OpenAI"
        lines = [
            f"[bold]API[/bold]            {api_url}   (docs: {api_url}/docs)",
            f"[bold]Temporal[/bold]       {temporal_address}" + ("   (embedded dev server)" if ui_url else ""),
            f"[bold]Temporal Web UI[/bold] {ui_url or 'n/a'}",
            f"[bold]PostgreSQL[/bold]     {'embedded, ' + str(data_dir / 'pg') if not settings.database_url else 'DATABASE_URL'}",
            f"[bold]LLM[/bold]            {llm}",
            f"[bold]Metrics[/bold]        {api_url}/metrics (API)",
            f"               http://{host}:{wm_port}/metrics (worker)",
            f"               http://{host}:{tm_port}/metrics (Temporal SDK)",
            f"[bold]Logs[/bold]           {logs}",
            "",
            f"API key for user '{DEMO_USER}' (saved in {data_dir / 'demo-api-key'}):",
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
        console.print("Press Ctrl-C to stop.", style="dim")

        while not stop_requested:
            for name, proc in (("worker", worker), ("API", api)):
                if proc.poll() is not None:
                    console.print(f"[red]the {name} exited (code {proc.returncode}); stopping[/red]")
                    stop_requested = True
            time.sleep(0.2)
        console.print("stopping…")
    console.print("stopped.")
