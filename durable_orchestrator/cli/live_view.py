"""What `orchestrator watch` (and `submit --wait`) shows: the task's event stream rendered as
it happens. On a terminal, a live table of steps with the streamed text of each running step;
piped, one line per status change, easy to log."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from durable_orchestrator.cli.api_client import Api
from durable_orchestrator.cli.common import console, fail

TERMINAL = {"completed", "failed", "cancelled"}
#: How much of a running step's text stays on screen.
TAIL_CHARS = 1200
RECONNECT_SECS = 0.5


@dataclass
class StepView:
    index: int
    agent: str
    title: str = ""
    status: str = "pending"
    text: str = ""
    streamed: tuple[int, int] = (0, 0)  # (attempt, turn) the text belongs to


@dataclass
class TaskView:
    task_id: str
    status: str = "pending"
    steps: dict[int, StepView] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def apply(self, event: str, data: dict[str, Any]) -> list[str]:
        """Take one event in; the status lines it is worth in line mode."""
        if event == "task.status":
            if data.get("status") == self.status:
                return []
            self.status = str(data.get("status"))
            return [f"task {self.task_id}: {self.status}"]
        if event == "task.planned":
            for s in data.get("steps", []):
                self.steps.setdefault(s["index"], StepView(s["index"], s["agent"], s.get("title", "")))
            return []
        index = data.get("index")
        if not isinstance(index, int):
            return []
        step = self.steps.setdefault(index, StepView(index, str(data.get("agent", "?"))))
        if event == "step.delta":
            key = (int(data.get("attempt", 0)), int(data.get("turn", 0)))
            if key != step.streamed:  # a retry or a new turn starts its text over
                step.streamed, step.text = key, ""
            step.text = (step.text + str(data.get("text", "")))[-TAIL_CHARS:]
            return []
        status = {"step.started": "running", "step.finished": str(data.get("status", "completed"))}.get(event)
        if status is None and event.startswith("step."):
            status = str(data.get("status") or event.removeprefix("step."))
        if status is None or status == step.status:
            return []
        step.status = status
        if event == "step.finished":
            step.text = ""
        return [f"  step {index} · {step.agent}: {status}"]

    def render(self) -> RenderableType:
        table = Table("#", "agent", "title", "status")
        for s in sorted(self.steps.values(), key=lambda s: s.index):
            table.add_row(str(s.index), s.agent, s.title[:60], s.status)
        running = [s for s in sorted(self.steps.values(), key=lambda s: s.index) if s.text]
        panels = [Panel(Text(s.text), title=f"step {s.index} · {s.agent}", title_align="left") for s in running]
        return Group(Text(f"task {self.task_id}: {self.status}"), table, *panels)


def follow(api: Api, task_id: str, timeout: float | None = None) -> dict[str, Any]:
    """Follow the task's event stream to its end (reconnecting with Last-Event-ID when the
    connection drops) and return the final task."""
    view = TaskView(task_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    live = Live(view.render(), console=console, refresh_per_second=8) if console.is_terminal else None
    with live or contextlib.nullcontext():
        last_id: str | None = None
        while not view.done:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise fail(f"task {task_id} still {view.status} after {timeout:g}s", code=3)
            try:
                for sse in api.events(task_id, last_event_id=last_id, read_timeout=remaining):
                    last_id = sse.id or last_id
                    lines = view.apply(sse.event, sse.json())
                    if live is not None:
                        live.update(view.render(), refresh=True)  # deltas come batched: draw each
                    else:
                        for line in lines:
                            console.print(line, highlight=False, markup=False)
                    if deadline is not None and time.monotonic() > deadline:
                        break
            except httpx.TimeoutException:
                continue  # the deadline check above decides
            except httpx.TransportError:
                time.sleep(RECONNECT_SECS)
                api.get(f"/tasks/{task_id}")  # an API that is gone ends the watch with one clear line
                continue
            if not view.done:  # the stream ended without a terminal event: read the row
                view.status = api.get(f"/tasks/{task_id}")["status"]
    return api.get(f"/tasks/{task_id}")
