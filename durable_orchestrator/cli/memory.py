"""`orchestrator memory add|search`: long-term memory through the API."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from durable_orchestrator.cli.api_client import Api
from durable_orchestrator.cli.common import DataDirOption, console, fail

app = typer.Typer(help="Add to and search long-term memory.", no_args_is_help=True)


@app.command("add")
def add(
    text: str = typer.Argument(..., help="The text to remember."),
    metadata: str | None = typer.Option(None, "--metadata", help="A JSON object."),
    data_dir: Path = DataDirOption,
) -> None:
    """Store a memory; prints its id."""
    body: dict[str, object] = {"text": text}
    if metadata:
        try:
            body["metadata"] = json.loads(metadata)
        except ValueError as exc:
            raise fail(f"--metadata is not JSON: {exc}") from None
    res = Api(data_dir).post("/memory", json=body, ok_404=True)
    if res is None:
        raise fail("this API has no memory endpoint (POST /memory)")
    typer.echo(res.get("id", res) if isinstance(res, dict) else res)


@app.command("search")
def search(
    query: str = typer.Argument(...),
    k: int = typer.Option(5, "-k", "--top-k"),
    data_dir: Path = DataDirOption,
) -> None:
    """Semantic search over your memories."""
    res = Api(data_dir).post("/memory/search", json={"query": query, "limit": k}, ok_404=True)
    if res is None:
        raise fail("this API has no memory search endpoint (POST /memory/search)")
    items = res.get("results", res.get("items", [])) if isinstance(res, dict) else res
    table = Table("score", "id", "text")
    for m in items:
        table.add_row(f"{m.get('score', 0):.3f}", str(m.get("id", "")), str(m.get("text", ""))[:80])
    console.print(table)
