"""`orchestrator rerun ID --from-step K`: rerun a finished task, reusing what the step and the
edits do not affect (POST /tasks/{id}/rerun)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from durable_orchestrator.cli.api_client import Api
from durable_orchestrator.cli.common import DataDirOption, console, fail
from durable_orchestrator.cli.tasks import EXIT_CODES, _print_task, follow


def _by_step(option: str, values: list[str]) -> dict[str, str]:
    edits: dict[str, str] = {}
    for value in values:
        index, sep, text = value.partition("=")
        if not sep or not index.strip().isdigit():
            raise fail(f"{option} takes STEP=VALUE (e.g. {option} 2=...), not {value!r}", code=2)
        edits[index.strip()] = text
    return edits


def rerun(
    task_id: str = typer.Argument(..., help="The finished task to rerun."),
    from_step: int | None = typer.Option(
        None, "--from-step", help="Run this step (and what depends on it) again."
    ),
    instructions: list[str] = typer.Option(
        [], "--instructions", help="STEP=TEXT: new instructions for a step (repeatable)."
    ),
    agent: list[str] = typer.Option(
        [], "--agent", help="STEP=AGENT: another agent for a step (repeatable)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="The model of the steps that run again."
    ),
    replan: bool = typer.Option(False, "--replan", help="Plan again from the description instead."),
    wait: bool = typer.Option(
        False, "--wait", help="Follow the new task and exit with its outcome."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", help="With --wait: give up after N seconds."
    ),
    data_dir: Path = DataDirOption,
) -> None:
    """Rerun a task from a step; prints the new task's id (or, with --wait, follows it)."""
    body: dict[str, Any] = {"from_step": from_step}
    if replan:
        body = {"replan": True}
    if instructions:
        body["instructions"] = _by_step("--instructions", instructions)
    if agent:
        body["agents"] = _by_step("--agent", agent)
    if model:
        body["model"] = model
    api = Api(data_dir)
    accepted = api.post(f"/tasks/{task_id}/rerun", json=body, ok_404=True)
    if accepted is None:
        raise fail(f"task {task_id} not found (or not yours)")
    if not wait:
        typer.echo(accepted["id"])
        return
    console.print(f"rerun of {task_id}: {accepted['id']}", highlight=False)
    task = follow(api, accepted["id"], timeout)
    _print_task(task)
    raise typer.Exit(EXIT_CODES.get(task["status"], 1))
