"""The `orchestrator` command."""

from __future__ import annotations

import typer

from durable_orchestrator.cli import keys, memory, tasks, tokens
from durable_orchestrator.cli.config import config
from durable_orchestrator.cli.migrate import migrate
from durable_orchestrator.cli.rerun import rerun
from durable_orchestrator.cli.up import up

app = typer.Typer(
    help="Durable Agent Orchestrator: run the system, manage keys, submit and follow tasks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("up")(up)
app.add_typer(keys.app, name="keys")
# Task and memory commands (talk to the API) and operations.
app.command("submit")(tasks.submit)
app.command("status")(tasks.status)
app.command("watch")(tasks.watch)
app.command("list")(tasks.list_)
app.command("cancel")(tasks.cancel)
app.command("approve")(tasks.approve)
app.command("rerun")(rerun)
app.add_typer(memory.app, name="memory")
app.command("migrate")(migrate)
app.add_typer(tokens.app, name="tokens")
app.command("config")(config)


if __name__ == "__main__":
    app()
