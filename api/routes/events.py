"""GET /tasks/{id}/events: the task's events as Server-Sent Events, read from Postgres.

Postgres is the only source of the durable events, so any API replica serves any stream, and a
client that reconnects with `Last-Event-ID` (browsers' EventSource do it on their own) gets
exactly the events after that id. Between them come `step.delta` events, the text of running
steps as it is generated (live only: they carry no id and are not replayed on reconnect; the
finished step's whole text is in the durable record). The stream ends after the terminal
`task.status` event."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import EngineDep, SettingsDep, require
from api.errors import ERROR_RESPONSES, APIError
from durable_orchestrator.auth.api_keys import Principal
from durable_orchestrator.data import events, tasks, watching
from durable_orchestrator.data.tables import TERMINAL
from durable_orchestrator.live.deltas import StepDelta
from durable_orchestrator.live.hub import DeltaHub

MAX_EVENT_ID = 10**18 - 1

router = APIRouter(prefix="/tasks", tags=["events"], responses=ERROR_RESPONSES)

ReadUser = Annotated[Principal, require("tasks:read")]

# What an SSE parser (a browser's EventSource, schemathesis) makes of each event in the stream;
# keep-alive comments are not events.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "Event id, increasing."},
        "event": {"type": "string", "description": "task.status, task.planned, step.started, ..."},
        "data": {"type": "string", "description": "The event's JSON object."},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}

_SSE_DOC = {
    200: {
        "description": "`text/event-stream`: one SSE event per stored event; `id` = event id, "
        "`event` = type (task.status, task.planned, step.started, step.finished, ...), "
        "`data` = JSON. Live `step.delta` events (no `id`; data `{index, attempt, turn, seq, "
        "text}`) carry a running step's text as it is generated. Ends after the terminal "
        "task.status event.",
        "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
    }
}


@router.get(
    "/{task_id}/events",
    summary="Stream a task's events (SSE)",
    response_class=EventSourceResponse,
    responses=_SSE_DOC,  # type: ignore[arg-type]
)
async def task_events(
    task_id: str,
    request: Request,
    principal: ReadUser,
    engine: EngineDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID", max_length=18, pattern="^[0-9]+$",
            description="Resume after this event id.",
            # A header is a string or absent; "null" is not an event id.
            json_schema_extra={"anyOf": [{"type": "string", "maxLength": 18, "pattern": "^[0-9]+$"}]},
        ),
    ] = None,
    after: Annotated[
        int | None,
        # Bounded like Last-Event-ID's 18 digits: ids are PostgreSQL bigints.
        Query(ge=0, le=MAX_EVENT_ID, description="Same as Last-Event-ID, for clients that cannot set headers."),
    ] = None,
    deltas: Annotated[
        bool, Query(description="Also send live `step.delta` events with the text of running steps.")
    ] = True,
) -> EventSourceResponse:
    start = after or 0
    if last_event_id:
        if not last_event_id.isdigit():
            raise APIError(422, "validation_error", "invalid request: Last-Event-ID",
                           [{"field": "Last-Event-ID", "message": "must be an event id"}])
        start = int(last_event_id)
    if await tasks.task_status(engine, task_id, principal.user_id) is None:
        raise APIError(404, "not_found", f"task {task_id} not found")
    interval = settings.sse_poll_interval_secs

    hub: DeltaHub = request.app.state.deltas

    async def stream() -> AsyncIterator[ServerSentEvent]:
        # Subscribed before the first read, so no delta falls between history and live.
        async with hub.subscribe(task_id) if deltas else _no_deltas() as live:
            loop = asyncio.get_running_loop()
            last, next_poll, renew_at = start, 0.0, 0.0
            finished: set[int] = set()
            while True:
                if deltas and loop.time() >= renew_at:  # steps started meanwhile stream for us
                    await watching.watch(engine, task_id)
                    renew_at = loop.time() + watching.LEASE_SECS / 3
                if loop.time() >= next_poll:
                    batch = await events.read_after(engine, task_id, last)
                    for ev in batch:
                        last = ev.id
                        if ev.type == "step.finished":
                            finished.add(ev.data.get("index"))
                        yield ServerSentEvent(json.dumps(ev.data), event=ev.type, id=str(ev.id))
                        if ev.terminal:
                            return
                    if batch:
                        continue
                    # Resumed after the terminal event, or it was deleted: nothing more will come.
                    status = await tasks.task_status(engine, task_id, principal.user_id)
                    if status is None or (status in TERMINAL and not await events.any_after(engine, task_id, last)):
                        return
                    next_poll = loop.time() + interval
                for delta in await _arrivals(live, next_poll - loop.time()):
                    if delta.step not in finished:  # its step.finished already has the whole text
                        yield ServerSentEvent(json.dumps(delta.event_data()), event="step.delta")

    return EventSourceResponse(stream(), ping=settings.sse_ping_secs, headers={"Cache-Control": "no-store"})


@contextlib.asynccontextmanager
async def _no_deltas() -> AsyncIterator[asyncio.Queue[StepDelta]]:
    yield asyncio.Queue()


async def _arrivals(queue: asyncio.Queue[StepDelta], within: float) -> list[StepDelta]:
    """What is queued, waiting up to `within` seconds for the first one."""
    try:
        first = await asyncio.wait_for(queue.get(), timeout=max(within, 0.0))
    except TimeoutError:
        return []
    arrived = [first]
    while not queue.empty():
        arrived.append(queue.get_nowait())
    return arrived
