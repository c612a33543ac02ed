"""Task commands: submit, status, watch, list, cancel, approve. They talk to the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from durable_orchestrator.cli.api_client import Api
from durable_orchestrator.cli.common import DataDirOption, console, err_console, fail
from durable_orchestrator.cli.live_view import follow

EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 2}


def _steps_table(task: dict[str, Any]) -> Table:
    table = Table("#", "agent", "title", "status", "model", "tokens", title=f"task {task['id']}: {task['status']}")
    for s in task.get("steps", []):
        cost = s.get("cost") or {}
        table.add_row(str(s["index"]), s["agent"], s["title"][:60], s["status"], s.get("model") or "",
                      str(cost.get("prompt_tokens", 0) + cost.get("completion_tokens", 0)))
    return table


def _print_task(task: dict[str, Any]) -> None:
    console.print(_steps_table(task))
    if task.get("result"):
        console.print(task["result"], markup=False, highlight=False)
    if task.get("error"):
        err_console.print(f"[red]error:[/red] {task['error']}", markup=True, highlight=False)
    cost = task.get("cost") or {}
    console.print(f"cost ${cost.get('usd', 0):.6f} · {cost.get('prompt_tokens', 0)} prompt + "
                  f"{cost.get('completion_tokens', 0)} completion tokens", style="dim")


def _get(api: Api, task_id: str) -> dict[str, Any]:
    task = api.get(f"/tasks/{task_id}", ok_404=True)
    if task is None:
        raise fail(f"task {task_id} not found (or not yours)")
    return task


def submit(
    description: str = typer.Argument(..., help="What to do."),
    wait: bool = typer.Option(False, "--wait", help="Follow the task and exit with its outcome."),
    timeout: float | None = typer.Option(None, "--timeout", help="With --wait: give up after N seconds."),
    agent: str | None = typer.Option(None, "--agent", help="One step for this agent, no planning call."),
    plan: Path | None = typer.Option(
        None, "--plan", help="A JSON file with the steps to run, no planning call.", exists=True, dir_okay=False
    ),
    data_dir: Path = DataDirOption,
) -> None:
    """Submit a task; prints its id (or, with --wait, follows it to the end)."""
    body: dict[str, Any] = {"description": description}
    if agent:
        body["agent"] = agent
    if plan:
        try:
            body["plan"] = json.loads(plan.read_text())
        except ValueError as exc:
            raise fail(f"--plan {plan}: not JSON ({exc})", code=2) from None
    api = Api(data_dir)
    accepted = api.post("/tasks", json=body)
    if not wait:
        typer.echo(accepted["id"])
        return
    console.print(f"submitted {accepted['id']}", highlight=False)
    task = follow(api, accepted["id"], timeout)
    _print_task(task)
    raise typer.Exit(EXIT_CODES.get(task["status"], 1))


def status(task_id: str = typer.Argument(...), data_dir: Path = DataDirOption) -> None:
    """Show a task and its steps."""
    _print_task(_get(Api(data_dir), task_id))


def watch(
    task_id: str = typer.Argument(...),
    timeout: float | None = typer.Option(None, "--timeout", help="Give up after N seconds (exit 3)."),
    data_dir: Path = DataDirOption,
) -> None:
    """Follow a task live (steps, and the text of running steps as it is generated); exit 0
    when it completes, 1 failed, 2 cancelled."""
    task = follow(Api(data_dir), task_id, timeout)
    _print_task(task)
    raise typer.Exit(EXIT_CODES.get(task["status"], 1))


def list_(
    limit: int = typer.Option(20, "--limit"),
    status_: str | None = typer.Option(None, "--status", help="Only tasks in this status."),
    data_dir: Path = DataDirOption,
) -> None:
    """List your recent tasks."""
    params: dict[str, Any] = {"limit": limit}
    if status_:
        params["status"] = status_
    api = Api(data_dir)
    body = api.request("GET", "/tasks", params=params, ok_404=True)
    if body is None:
        raise fail("this API has no task list endpoint (GET /tasks)")
    items = body.get("items", body.get("tasks", [])) if isinstance(body, dict) else body
    table = Table("id", "status", "created", "description")
    for t in items:
        table.add_row(t["id"], t["status"], str(t.get("created_at", ""))[:19], str(t.get("description", ""))[:60])
    console.print(table)


def cancel(task_id: str = typer.Argument(...), data_dir: Path = DataDirOption) -> None:
    """Ask a running task to stop."""
    if Api(data_dir).post(f"/tasks/{task_id}/cancel", ok_404=True) is None:
        raise fail(f"task {task_id} not found (or this API has no cancel endpoint)")
    console.print(f"cancellation requested for {task_id}")


def approve(
    task_id: str = typer.Argument(...),
    approval_id: str = typer.Argument(...),
    reject: bool = typer.Option(False, "--reject", help="Reject instead of approve."),
    comment: str | None = typer.Option(None, "--comment"),
    data_dir: Path = DataDirOption,
) -> None:
    """Approve (or --reject) a pending tool call."""
    body = {"decision": "reject" if reject else "approve", "comment": comment}
    if Api(data_dir).post(f"/tasks/{task_id}/approvals/{approval_id}", json=body, ok_404=True) is None:
        raise fail(f"approval {approval_id} of task {task_id} not found")
    console.print(f"{'rejected' if reject else 'approved'} {approval_id}")
