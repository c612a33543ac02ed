"""/tasks: submit, read. The API never waits on an LLM: it writes the row, starts the
workflow and returns."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Header, Request, Response, status
from sqlalchemy.exc import IntegrityError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from api.deps import EngineDep, SettingsDep, TemporalDep, require
from api.errors import ERROR_RESPONSES, APIError
from api.schemas import TaskAccepted, TaskCreate, TaskPublic
from core import store
from core.apikeys import Principal
from core.contracts import TASK_WORKFLOW, ExecutionPolicy, TaskInput, workflow_id_for
from core.settings import Settings

router = APIRouter(prefix="/tasks", tags=["tasks"], responses=ERROR_RESPONSES)
log = structlog.get_logger(__name__)

WriteUser = Annotated[Principal, require("tasks:write")]
ReadUser = Annotated[Principal, require("tasks:read")]


def execution_policy(settings: Settings) -> ExecutionPolicy:
    return ExecutionPolicy(
        initial_interval_secs=settings.retry_initial_interval_secs,
        backoff=settings.retry_backoff,
        max_interval_secs=settings.retry_max_interval_secs,
        max_attempts=settings.retry_max_attempts,
        step_timeout_secs=settings.step_timeout_secs,
        deadline_secs=settings.task_deadline_secs,
        max_parallel_steps=settings.max_parallel_steps,
    )


def _request_hash(body: TaskCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()


async def _start_workflow(request: Request, task_id: str, user_id: str, description: str) -> None:
    settings: Settings = request.app.state.settings
    await request.app.state.temporal.start_workflow(
        TASK_WORKFLOW,
        TaskInput(task_id=task_id, user_id=user_id, policy=execution_policy(settings)),
        id=workflow_id_for(task_id),
        task_queue=settings.task_queue,
        # A retried submission (same Idempotency-Key) after a crash between insert and start
        # attaches to the run that exists instead of starting a second one.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=description[:200],
    )


def _accepted(request: Request, task_id: str, status_: str) -> TaskAccepted:
    return TaskAccepted(
        id=task_id,
        status=status_,  # type: ignore[arg-type]
        workflow_id=workflow_id_for(task_id),
        status_url=str(request.url_for("get_task", task_id=task_id)),
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    summary="Submit a task",
    responses={200: {"model": TaskAccepted, "description": "Same Idempotency-Key seen before"}},
)
async def create_task(
    body: TaskCreate,
    request: Request,
    response: Response,
    principal: WriteUser,
    engine: EngineDep,
    settings: SettingsDep,
    _temporal: TemporalDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> TaskAccepted:
    if body.user_id is not None and body.user_id != principal.user_id:
        raise APIError(403, "forbidden", "user_id does not match the API key's user",
                       {"field": "user_id"})
    if len(body.description) > settings.max_description_chars:
        raise APIError(
            422, "validation_error",
            f"invalid request: description (at most {settings.max_description_chars} characters)",
            [{"field": "description", "message": f"longer than {settings.max_description_chars} characters"}],
        )
    task_id = store.new_task_id()
    request_hash = _request_hash(body) if idempotency_key else None
    try:
        async with engine.begin() as conn:
            await store.insert_task(
                conn,
                task_id=task_id,
                user_id=principal.user_id,
                description=body.description,
                metadata=body.metadata,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        return await _replay(request, response, engine, principal, idempotency_key, request_hash)
    try:
        await _start_workflow(request, task_id, principal.user_id, body.description)
    except Exception as exc:
        # Nothing half-written: without a workflow the row would sit in 'pending' forever.
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM tasks WHERE id=:t"), {"t": task_id})
        log.error("workflow_start_failed", task_id=task_id, error=str(exc))
        raise APIError(503, "temporal_unavailable", "could not start the task; try again") from exc
    return _accepted(request, task_id, "pending")


async def _replay(request, response, engine, principal, key, request_hash):  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT id, status, request_hash, description FROM tasks "
                    "WHERE user_id=:u AND idempotency_key=:k"
                ),
                {"u": principal.user_id, "k": key},
            )
        ).first()
    if row is None:  # lost a race with a delete; extremely unlikely
        raise APIError(409, "conflict", "idempotency key in use; retry")
    if row.request_hash != request_hash:
        raise APIError(409, "idempotency_key_reused",
                       "this Idempotency-Key was used with a different request body")
    if row.status == "pending":
        await _start_workflow(request, row.id, principal.user_id, row.description)
    response.status_code = status.HTTP_200_OK
    return _accepted(request, row.id, row.status)


@router.get("/{task_id}", response_model=TaskPublic, summary="Get a task with its steps")
async def get_task(task_id: str, principal: ReadUser, engine: EngineDep) -> TaskPublic:
    view = await store.get_task_view(engine, task_id, principal.user_id)
    if view is None:
        raise APIError(404, "not_found", f"task {task_id} not found")
    return TaskPublic.model_validate(view)


# --- issue 4: cancellation --------------------------------------------------------------------


@router.post(
    "/{task_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    summary="Cancel a task",
    description="Requests cancellation of the task's workflow (the same as `temporal workflow "
    "cancel -w task-<id>`). The running step's LLM call is interrupted through its heartbeat, "
    "no later step starts, and the status becomes `cancelled` within seconds. 409 if the task "
    "has already finished.",
)
async def cancel_task(
    task_id: str, request: Request, principal: WriteUser, engine: EngineDep, client: TemporalDep
) -> TaskAccepted:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text("SELECT status FROM tasks WHERE id=:t AND user_id=:u"),
                {"t": task_id, "u": principal.user_id},
            )
        ).first()
    if row is None:
        raise APIError(404, "not_found", f"task {task_id} not found")
    if row.status in store.TERMINAL:
        raise APIError(409, "task_finished", f"task {task_id} is already {row.status}")
    try:
        await client.get_workflow_handle(workflow_id_for(task_id)).cancel()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the run ended between our read and now
            raise APIError(409, "task_finished", f"task {task_id} has already finished") from exc
        raise APIError(503, "temporal_unavailable", "could not cancel the task; try again") from exc
    log.info("task_cancel_requested", task_id=task_id)
    return _accepted(request, task_id, row.status)
