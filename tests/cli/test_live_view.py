"""`orchestrator watch`'s live view: the event stream rendered as it happens, against a real
stack served over HTTP, with a step whose answer is streamed a word at a time."""

from __future__ import annotations

import asyncio

import pytest
from rich.console import Console

from durable_orchestrator.cli import live_view
from durable_orchestrator.cli.api_client import Api
from tests.api.helpers import serve
from tests.api.test_live_text import ANSWER, stream_steps
from tests.utils import Stack


def test_view_keeps_the_text_of_running_steps_and_starts_over_on_retry() -> None:
    view = live_view.TaskView("t1")
    view.apply("task.planned", {"steps": [{"index": 0, "agent": "researcher", "title": "Look"}]})
    assert view.apply("step.started", {"index": 0, "agent": "researcher"}) == ["  step 0 · researcher: running"]
    view.apply("step.delta", {"index": 0, "attempt": 1, "turn": 0, "seq": 0, "text": "half an "})
    view.apply("step.delta", {"index": 0, "attempt": 2, "turn": 0, "seq": 0, "text": "whole "})
    view.apply("step.delta", {"index": 0, "attempt": 2, "turn": 0, "seq": 1, "text": "answer"})
    assert view.steps[0].text == "whole answer"
    out = Console(record=True, width=80)
    out.print(view.render())
    assert "whole answer" in out.export_text()
    assert view.apply("step.finished", {"index": 0, "status": "completed"}) == ["  step 0 · researcher: completed"]
    assert view.steps[0].text == ""  # the final text is the task's, printed at the end
    assert view.apply("task.status", {"status": "completed"}) == ["task t1: completed"] and view.done


@pytest.mark.parametrize("terminal", [True, False])
async def test_watch_shows_streamed_text_live(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path, terminal: bool) -> None:  # type: ignore[no-untyped-def]
    stream_steps(stack.fake, chunk_delay=0.02)
    screen = Console(record=True, width=120, force_terminal=terminal, color_system=None)
    monkeypatch.setattr(live_view, "console", screen)
    app = stack.http._transport.app  # type: ignore[attr-defined]
    async with serve(app) as base:
        monkeypatch.setenv("ORCH_API_URL", base)
        monkeypatch.setenv("ORCH_API_KEY", stack.key)
        task_id = await stack.submit("watch me")
        final = await asyncio.to_thread(live_view.follow, Api(tmp_path), task_id, 60)
    assert final["status"] == "completed"
    shown = screen.export_text()
    if terminal:
        assert ANSWER.split()[5] in shown  # streamed text was on screen while the step ran
        assert f"task {task_id}: completed" in shown
    else:
        assert f"task {task_id}: completed" in shown.splitlines()
        assert sum("· " in line and line.endswith(": completed") for line in shown.splitlines()) == len(final["steps"])
