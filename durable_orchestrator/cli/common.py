"""Helpers shared by CLI commands: reaching the database of a running `up`, one-line errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console

from durable_orchestrator.data.engine import create_engine
from durable_orchestrator.devstack import EmbeddedPostgres
from durable_orchestrator.settings import get_settings

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

DEFAULT_DATA_DIR = Path(".orchestrator")
DataDirOption = typer.Option(
    DEFAULT_DATA_DIR, "--data-dir", envvar="ORCH_DATA_DIR", help="State of the embedded services (same as `up`)."
)


def fail(message: str, code: int = 1) -> typer.Exit:
    # soft_wrap: one line however long (paths, URLs), so it greps and pastes whole.
    err_console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(code)


def database_url(data_dir: Path) -> str:
    """DATABASE_URL when set, else the embedded PostgreSQL of a running `up` in data_dir."""
    settings = get_settings()
    if settings.database_url:
        return settings.database_url
    url = EmbeddedPostgres.running_url(data_dir / "pg")
    if url is None:
        raise fail(
            f"no running `orchestrator up` found in {data_dir} (and DATABASE_URL is unset); "
            "start one with `orchestrator up` or set DATABASE_URL"
        )
    return url


def with_engine(data_dir: Path, fn: Callable[..., Awaitable[T]]) -> T:
    url = database_url(data_dir)

    async def run() -> T:
        engine = create_engine(url, pool_size=1)
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def cli_actor() -> str:
    """Who the audit log names for CLI actions: `cli:<os user>`."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli:unknown"
