"""The `orchestrator` command."""

from __future__ import annotations

import typer

from cli import keys
from cli.bench import bench
from cli.up import up

app = typer.Typer(
    help="Durable Agent Orchestrator: run the system, manage keys, submit and follow tasks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("up")(up)
app.add_typer(keys.app, name="keys")
app.command("bench")(bench)


if __name__ == "__main__":
    app()
