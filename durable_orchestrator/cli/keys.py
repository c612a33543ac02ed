"""`orchestrator keys create|list|revoke`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.table import Table

from durable_orchestrator.auth import api_keys
from durable_orchestrator.cli.common import DataDirOption, cli_actor, console, fail, with_engine

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@app.command("create")
def create(
    user: str = typer.Option(..., "--user", help="The user the key acts as."),
    name: str | None = typer.Option(None, help="A label to recognise the key by."),
    scopes: str = typer.Option(
        ",".join(api_keys.DEFAULT_SCOPES), help=f"Comma-separated, of: {', '.join(api_keys.ALL_SCOPES)}"
    ),
    expires_in_days: float | None = typer.Option(None, help="Expire the key after N days."),
    max_running_tasks: int | None = typer.Option(
        None, min=0, help="Tasks of the user running at once when submitted with this key (0: no bound); "
        "default ORCH_USER_MAX_RUNNING_TASKS.",
    ),
    save: bool = typer.Option(False, "--save", help="Save key and API URL in the CLI config."),
    data_dir: Path = DataDirOption,
) -> None:
    """Create a key; the key itself is printed once, as the last line."""
    wanted = tuple(s.strip() for s in scopes.split(",") if s.strip())
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    try:
        key, info = with_engine(
            data_dir,
            lambda e: api_keys.create_key(
                e, user, name=name, scopes=wanted, expires_at=expires,
                max_running_tasks=max_running_tasks, actor=cli_actor(),
            ),
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(f"created key {info.id} (prefix {info.prefix}) for user {user}; scopes {', '.join(info.scopes)}")
    if save:
        from durable_orchestrator.cli.api_client import api_url, save_config

        path = save_config(api_key=key, api_url=api_url(data_dir))
        console.print(f"saved to {path}; `orchestrator submit` and friends will use it", style="dim")
    console.print("store it now, it is not shown again:", style="dim")
    typer.echo(key)


@app.command("list")
def list_(
    user: str | None = typer.Option(None, "--user"), data_dir: Path = DataDirOption
) -> None:
    """List keys (never the keys themselves: id, prefix, user, scopes, state)."""
    keys = with_engine(data_dir, lambda e: api_keys.list_keys(e, user))
    table = Table("id", "prefix", "user", "name", "scopes", "created", "expires", "state")
    now = datetime.now(UTC)
    for k in keys:
        state = "revoked" if k.revoked_at else "expired" if k.expires_at and k.expires_at < now else "active"
        table.add_row(k.id, k.prefix, k.user_id, k.name or "", ",".join(k.scopes),
                      f"{k.created_at:%Y-%m-%d %H:%M}", f"{k.expires_at:%Y-%m-%d}" if k.expires_at else "", state)
    console.print(table)


@app.command("revoke")
def revoke(key: str = typer.Argument(..., help="Key id or prefix."), data_dir: Path = DataDirOption) -> None:
    """Revoke a key by id or prefix; it stops working immediately."""
    try:
        revoked = with_engine(data_dir, lambda e: api_keys.revoke_key(e, key, actor=cli_actor()))
    except api_keys.AmbiguousKeyPrefix as exc:
        raise fail(str(exc)) from None
    if not revoked:
        raise fail(f"no active key with id or prefix {key!r}")
    console.print(f"revoked {key}")
