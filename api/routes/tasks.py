"""/tasks: submit, read. The API never waits on an LLM: it writes the row, starts the
workflow and returns."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from typing import Annotated, Any
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Header, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api import webhook_urls
from api.deps import EngineDep, SettingsDep, TemporalDep, request_id, require
from api.errors import ERROR_RESPONSES, APIError
from api.rate_limits import rate_limited
from api.schemas import TaskAccepted, TaskCreate, TaskList, TaskPublic, TaskStatus, TaskSummary
from durable_orchestrator.auth.api_keys import Principal
from durable_orchestrator.data import audit, steps, task_list, task_view, tasks
from durable_orchestrator.data.engine import single_statement
from durable_orchestrator.data.tables import TERMINAL
from durable_orchestrator.llm.budget import BudgetAboveCap, effective_task_budget
from durable_orchestrator.outbound import literal_refusal
from durable_orchestrator.settings import Settings
from durable_orchestrator.telemetry import metrics
from durable_orchestrator.temporal.contracts import workflow_id_for
from durable_orchestrator.temporal.task_start import start_task_workflow
from planner.agents import AGENTS
from planner.models import PlanInvalid, single_step_plan, validate_plan

router = APIRouter(prefix="/tasks", tags=["tasks"], responses=ERROR_RESPONSES)
log = structlog.get_logger(__name__)

WriteUser = Annotated[Principal, require("tasks:write")]
ReadUser = Annotated[Principal, require("tasks:read")]


def _request_hash(body: TaskCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()


def running_bound(principal: Principal, settings: Settings) -> int | None:
    """How many of the user's tasks may run at once under this key; None (or 0): no bound."""
    bound = principal.max_running_tasks if principal.max_running_tasks is not None else settings.user_max_running_tasks
    return bound or None


async def _start_workflow(
    request: Request, task_id: str, user_id: str, description: str, options: dict[str, Any],
    *, bounded: bool,
) -> None:
    """Start the task's workflow; the row is already committed. When the start fails (Temporal
    down, or the call timed out after the server accepted it), the row stays: deleting it could
    orphan a running workflow, and the reconciler starts (or attaches to) the workflow of every
    quiet pending row within ORCH_RECONCILE_GRACE_SECS + ORCH_RECONCILE_INTERVAL_SECS."""
    try:
        await start_task_workflow(
            request.app.state.temporal, request.app.state.settings,
            task_id=task_id, user_id=user_id, description=description,
            webhook=bool(options.get("webhook_url")), priority=options.get("priority", "normal"),
            bounded=bounded,
        )
    except WorkflowAlreadyStartedError:
        pass  # its run has already closed; the reconciler records how it ended
    except Exception as exc:
        log.warning("workflow_start_deferred", task_id=task_id, error=str(exc) or type(exc).__name__)


def _accepted(request: Request, task_id: str, status_: str) -> TaskAccepted:
    return TaskAccepted(
        id=task_id,
        status=status_,  # type: ignore[arg-type]
        workflow_id=workflow_id_for(task_id),
        status_url=str(request.url_for("get_task", task_id=task_id)),
    )


def _check_webhook(url: str, settings: Settings) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    allowed = {h.lower() for h in settings.webhook_allowed_hosts}
    problem = None
    if parts.scheme not in ("http", "https") or not host:
        problem = "must be an absolute http(s) URL"
    elif host not in allowed:
        problem = f"host {host!r} is not in ORCH_WEBHOOK_ALLOWED_HOSTS"
    elif parts.username or parts.password:
        problem = "must not carry credentials"
    elif why := literal_refusal(host, settings.webhook_private_hosts):
        problem = f"{why}; ORCH_WEBHOOK_PRIVATE_HOSTS names hosts that may be"
    elif not settings.webhook_secret:
        problem = "webhooks are off until ORCH_WEBHOOK_SECRET is set"
    elif not re.fullmatch(webhook_urls.url_pattern(settings.webhook_allowed_hosts) or "(?!)", url):
        problem = "must match the pattern in the OpenAPI document (scheme, allowed host, port, path)"
    if problem:
        raise APIError(422, "validation_error", "invalid request: webhook_url",
                       [{"field": "webhook_url", "message": problem}])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=None,
    summary="Submit a task",
    description="Returns 202 with the accepted task. With `?wait=N` the call waits up to N "
    "seconds (at most ORCH_MAX_WAIT_SECS) and returns 200 with the finished task (as GET "
    "/tasks/{id}) when it ends in time. A repeated Idempotency-Key returns 200 with the "
    "original task's accepted body.",
    responses={
        200: {"model": TaskPublic | TaskAccepted,
              "description": "Finished within `wait`, or the same Idempotency-Key seen before"},
        202: {"model": TaskAccepted, "description": "Accepted; follow status_url or the events"},
    },
    dependencies=[rate_limited("task_submit", "rate_limit", per="key")],
)
async def create_task(
    body: TaskCreate,
    request: Request,
    response: Response,
    principal: WriteUser,
    engine: EngineDep,
    settings: SettingsDep,
    _temporal: TemporalDep,
    idempotency_key: Annotated[
        str | None,
        Header(min_length=1, max_length=200,
               description="Repeat a submission safely: the same key and body return the first task. "
               "Not blank."),
    ] = None,
    wait: Annotated[
        float | None,
        Query(ge=0, description="Seconds to wait for the task to finish (max ORCH_MAX_WAIT_SECS)."),
    ] = None,
) -> TaskAccepted | TaskPublic:
    _check_submission(body, principal, settings, wait)
    if idempotency_key is not None and not idempotency_key.strip():
        # Refused rather than treated as absent: a client that sends the header means to
        # deduplicate, and an empty key would silently not.
        raise APIError(422, "validation_error", "invalid request: Idempotency-Key",
                       [{"field": "Idempotency-Key", "message": "must not be empty or blank"}])
    given_plan = client_plan(body, settings)
    task_id = tasks.new_task_id()
    request_hash = _request_hash(body) if idempotency_key else None
    options = _task_options(body, settings)
    bound = running_bound(principal, settings)
    try:
        # Without given steps the submission is one statement: no transaction around it.
        async with (engine.begin() if given_plan else single_statement(engine)) as conn:
            await tasks.insert_task(
                conn,
                task_id=task_id,
                user_id=principal.user_id,
                description=body.description,
                metadata=body.metadata,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                options=options,
                max_running=bound,
                task_queue=settings.task_queue,
                plan_source="client" if given_plan else None,
            )
            if given_plan:
                await steps.insert_given_plan(conn, task_id, given_plan)
    except IntegrityError:
        if not idempotency_key:
            raise
        return await _replay(request, response, engine, principal, idempotency_key, request_hash)
    await _start_workflow(request, task_id, principal.user_id, body.description, options, bounded=bound is not None)
    metrics.TASKS_SUBMITTED.inc()
    if wait:
        finished = await _wait_for_end(engine, settings, task_id, principal.user_id, wait)
        if finished is not None:
            response.status_code = status.HTTP_200_OK
            return finished
    return _accepted(request, task_id, "pending")


def _check_submission(body: TaskCreate, principal: Principal, settings: Settings, wait: float | None) -> None:
    """What the request schema cannot check: limits from the settings, and the caller."""
    if wait is not None and wait > settings.max_wait_secs:
        raise APIError(422, "validation_error", "invalid request: wait",
                       [{"field": "wait", "message": f"at most {settings.max_wait_secs:g} seconds"}])
    if body.webhook_url is not None:
        _check_webhook(body.webhook_url, settings)
    if body.user_id is not None and body.user_id != principal.user_id:
        raise APIError(403, "forbidden", "user_id does not match the API key's user",
                       {"field": "user_id"})
    if len(body.description) > settings.max_description_chars:
        raise APIError(
            422, "validation_error",
            f"invalid request: description (at most {settings.max_description_chars} characters)",
            [{"field": "description", "message": f"longer than {settings.max_description_chars} characters"}],
        )


def client_plan(body: TaskCreate, settings: Settings) -> list[dict[str, Any]] | None:
    """The steps the client chose (`agent` or `plan`), checked by the planner's own rules;
    None when the planner is to plan."""
    if body.agent is not None and body.plan is not None:
        raise APIError(422, "validation_error", "invalid request: agent, plan (give one, not both)",
                       [{"field": "plan", "message": "`agent` and `plan` are mutually exclusive"}])
    if body.agent is not None:
        if body.agent not in AGENTS:
            message = f"unknown agent {body.agent!r}; use one of {', '.join(AGENTS)} (GET /agents)"
            raise APIError(422, "validation_error", f"invalid request: agent ({message})",
                           [{"field": "agent", "message": message}])
        plan = single_step_plan(body.description, body.agent, title=f"{body.agent}: complete the task")
    elif body.plan is not None:
        try:
            plan = validate_plan([s.model_dump() for s in body.plan], max_steps=settings.max_plan_steps)
        except PlanInvalid as exc:
            details = [_plan_error(e) for e in exc.errors]
            raise APIError(422, "validation_error",
                           "invalid request: plan (" + "; ".join(d["message"] for d in details) + ")",
                           details) from None
    else:
        return None
    return [s.model_dump() for s in plan.steps]


def _plan_error(error: str) -> dict[str, str]:
    """The planner words errors for the LLM as "steps.1.agent: problem"; the client sent `plan`."""
    where, _, message = error.partition(": ")
    field = "plan" + where.removeprefix("steps") if where.startswith("steps") else "plan"
    return {"field": field, "message": f"{field}: {message}" if message else error}


def _task_options(body: TaskCreate, settings: Settings) -> dict[str, Any]:
    """Raises (422) before anything is written when the budget asks for more than the operator
    allows: a client can lower a cap, not raise it."""
    try:
        budget = effective_task_budget(body.budget.model_dump() if body.budget else None, settings)
    except BudgetAboveCap as exc:
        raise APIError(
            422, "validation_error", f"invalid request: budget.{exc.field}",
            [{"field": f"budget.{exc.field}", "message": str(exc)}],
        ) from None
    return {
        "budget": budget,
        **({"webhook_url": body.webhook_url} if body.webhook_url else {}),
        **({"priority": body.priority} if body.priority != "normal" else {}),
    }


async def _wait_for_end(
    engine, settings: Settings, task_id: str, user_id: str, wait: float  # type: ignore[no-untyped-def]
) -> TaskPublic | None:
    """Poll the task's status in Postgres (one indexed read per interval) until it is terminal
    or `wait` runs out. The LLM work stays in the worker; this only watches."""
    deadline = time.monotonic() + wait
    while True:
        if await tasks.task_status(engine, task_id, user_id) in TERMINAL:
            view = await task_view.get_task_view(engine, task_id, user_id)
            return TaskPublic.model_validate(view) if view else None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        await asyncio.sleep(min(settings.wait_poll_interval_secs, remaining))


async def _replay(request, response, engine, principal, key, request_hash):  # type: ignore[no-untyped-def]
    row = await tasks.find_submission(engine, principal.user_id, key)
    if row is None:  # lost a race with a delete; extremely unlikely
        raise APIError(409, "conflict", "idempotency key in use; retry")
    if row.request_hash != request_hash:
        raise APIError(409, "idempotency_key_reused",
                       "this Idempotency-Key was used with a different request body")
    if row.status == "pending":
        await _start_workflow(request, row.id, principal.user_id, row.description, row.options,
                          bounded=row.max_running is not None)
    response.status_code = status.HTTP_200_OK
    return _accepted(request, row.id, row.status)


@router.get("", response_model=TaskList, summary="List your tasks, newest first")
async def list_tasks(
    principal: ReadUser,
    engine: EngineDep,
    status_: Annotated[TaskStatus | None, Query(alias="status", description="Only tasks in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None,
        Query(pattern=task_list.CURSOR_PATTERN, description="`next_cursor` of the previous page."),
    ] = None,
) -> TaskList:
    try:
        rows, next_cursor = await task_list.list_tasks(
            engine, principal.user_id, status=status_, limit=limit, cursor=cursor
        )
    except task_list.BadCursor as exc:
        raise APIError(422, "validation_error", "invalid request: cursor",
                       [{"field": "cursor", "message": str(exc)}]) from None
    return TaskList(items=[TaskSummary.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{task_id}", response_model=TaskPublic, summary="Get a task with its steps")
async def get_task(task_id: str, principal: ReadUser, engine: EngineDep) -> TaskPublic:
    view = await task_view.get_task_view(engine, task_id, principal.user_id)
    if view is None:
        raise APIError(404, "not_found", f"task {task_id} not found")
    return TaskPublic.model_validate(view)


# --- cancellation -----------------------------------------------------------------------------


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
    task_status = await tasks.task_status(engine, task_id, principal.user_id)
    if task_status is None:
        raise APIError(404, "not_found", f"task {task_id} not found")
    if task_status in TERMINAL:
        raise APIError(409, "task_finished", f"task {task_id} is already {task_status}")
    handle = client.get_workflow_handle(workflow_id_for(task_id))
    try:
        try:
            await handle.cancel()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            if task_status != "pending":  # the run ended between our read and now
                raise APIError(409, "task_finished", f"task {task_id} has already finished") from exc
            # Accepted, but its workflow is not started yet (the reconciler would start it):
            # start it now, so the cancel lands on a run that records `cancelled` as usual.
            row = await tasks.load_task(engine, task_id)
            await start_task_workflow(
                client, request.app.state.settings, task_id=task_id, user_id=principal.user_id,
                description=row.description, webhook=bool(row.options.get("webhook_url")),
                priority=row.options.get("priority", "normal"),
            )
            await handle.cancel()
    except WorkflowAlreadyStartedError as exc:  # its run closed meanwhile
        raise APIError(409, "task_finished", f"task {task_id} has already finished") from exc
    except RPCError as exc:
        raise APIError(503, "temporal_unavailable", "could not cancel the task; try again") from exc
    await audit.record(engine, principal.user_id, "task.cancel", "success", request_id(request),
                       {"task_id": task_id})
    log.info("task_cancel_requested", task_id=task_id)
    return _accepted(request, task_id, task_status)
