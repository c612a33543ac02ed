"""`orchestrator tokens revoke JTI`."""

from __future__ import annotations

from pathlib import Path

import typer

from durable_orchestrator.auth import bearer
from durable_orchestrator.cli.common import DataDirOption, cli_actor, console, with_engine

app = typer.Typer(help="Bearer tokens (JWT): revoke by jti.", no_args_is_help=True)


@app.command("revoke")
def revoke(
    jti: str = typer.Argument(..., help="The token's `jti` claim."),
    reason: str | None = typer.Option(None, help="Why; kept in the audit log."),
    data_dir: Path = DataDirOption,
) -> None:
    """Refuse every token with this jti from now on (all API replicas)."""
    created = with_engine(
        data_dir, lambda e: bearer.revoke(e, jti, actor=cli_actor(), reason=reason)
    )
    console.print(f"revoked token {jti}" if created else f"token {jti} was already revoked")
