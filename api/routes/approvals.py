"""/tasks/{id}/approvals: the tool calls waiting for a human, and the decision on each.

A decision is sent to the task's workflow as the Temporal update `decide_approval`
(workflows/task_workflow.py); its validator refuses unknown or already decided approvals,
so a double approval is a 409 even when two requests race."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.deps import EngineDep, TemporalDep, request_id, require
from api.errors import ERROR_RESPONSES, APIError
from durable_orchestrator.auth.api_keys import Principal
from durable_orchestrator.data import audit, conversation, tasks
from durable_orchestrator.data.tables import TERMINAL
from durable_orchestrator.temporal.contracts import (
    APPROVAL_UPDATE,
    ApprovalDecision,
    workflow_id_for,
)

router = APIRouter(prefix="/tasks", tags=["approvals"], responses=ERROR_RESPONSES)
log = structlog.get_logger(__name__)

WriteUser = Annotated[Principal, require("tasks:write")]
ReadUser = Annotated[Principal, require("tasks:read")]

# The workflow learns of a new approval when run_step returns, a moment after the row is
# written: a decision sent in that gap is retried for this long.
REGISTER_GRACE_SECS = 5.0


class ApprovalPublic(BaseModel):
    approval_id: str
    step_index: int
    turn: int
    call_id: str
    tool: str
    arguments: Any
    status: str
    decision: str | None
    decision_comment: str | None
    decided_by: str | None
    decided_at: datetime | None
    created_at: datetime
    result: str | None
    error: str | None
    context_labels: list[str] = Field(
        default_factory=list,
        description="What the conversation held when the model asked for the call (`private`, "
        "`untrusted`); both together: held by the prompt-injection policy (docs/guarantees.md).",
    )


class ApprovalList(BaseModel):
    task_id: str
    items: list[ApprovalPublic]


class DecisionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"decision": "approve", "comment": "looks right"}]},
    )

    decision: Literal["approve", "reject"]
    comment: str | None = Field(None, max_length=2000)


class DecisionOut(BaseModel):
    task_id: str
    approval_id: str
    decision: Literal["approve", "reject"]


def _public(row: dict[str, Any]) -> ApprovalPublic:
    try:
        args = json.loads(row["arguments"])
    except (TypeError, ValueError):
        args = row["arguments"]
    return ApprovalPublic.model_validate({**row, "arguments": args})


async def _own_task(engine: EngineDep, task_id: str, user_id: str) -> str:
    """The task's status; 404 unless it exists and belongs to the caller."""
    status = await tasks.task_status(engine, task_id, user_id)
    if status is None:
        raise APIError(404, "not_found", f"task {task_id} not found")
    return status


@router.get("/{task_id}/approvals", response_model=ApprovalList, summary="Tool calls awaiting approval")
async def list_approvals(
    task_id: str,
    principal: ReadUser,
    engine: EngineDep,
    status: Annotated[Literal["pending", "all"], Query(description="pending (default) or all")] = "pending",
) -> ApprovalList:
    await _own_task(engine, task_id, principal.user_id)
    rows = await conversation.list_approvals(engine, task_id, pending_only=status == "pending")
    return ApprovalList(task_id=task_id, items=[_public(r) for r in rows])


def _already_decided(approval_id: str, row: dict[str, Any] | None) -> APIError:
    details = None
    if row is not None:
        details = {"status": row["status"], "decision": row["decision"], "decided_by": row["decided_by"]}
    return APIError(409, "approval_already_decided", f"approval {approval_id} was already decided", details)


@router.post(
    "/{task_id}/approvals/{approval_id}",
    response_model=DecisionOut,
    summary="Approve or reject a pending tool call",
)
async def decide(
    task_id: str,
    approval_id: str,
    body: DecisionIn,
    request: Request,
    principal: WriteUser,
    engine: EngineDep,
    temporal: TemporalDep,
) -> DecisionOut:
    task_status = await _own_task(engine, task_id, principal.user_id)
    row = await conversation.get_approval(engine, task_id, approval_id)
    if row is None:
        raise APIError(404, "approval_not_found", f"approval {approval_id} not found for task {task_id}")
    if row["decision"] is not None or row["status"] != "awaiting_approval":
        raise _already_decided(approval_id, row)
    if task_status in TERMINAL:
        raise APIError(409, "task_not_running", f"task {task_id} is already {task_status}")
    handle = temporal.get_workflow_handle(workflow_id_for(task_id))
    decision = ApprovalDecision(
        approval_id=approval_id, decision=body.decision, comment=body.comment, user_id=principal.user_id
    )
    deadline = time.monotonic() + REGISTER_GRACE_SECS
    while True:
        try:
            await handle.execute_update(APPROVAL_UPDATE, decision, result_type=str)
            break
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            kind = cause.type if isinstance(cause, ApplicationError) else None
            if kind == "ApprovalAlreadyDecided":
                raise _already_decided(approval_id, await conversation.get_approval(engine, task_id, approval_id)) from exc
            if kind == "ApprovalNotFound" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                continue
            raise APIError(409, "approval_not_pending", str(cause or exc)) from exc
        except RPCError as exc:  # the workflow is no longer running
            raise APIError(409, "task_not_running", f"task {task_id} is no longer running") from exc
    await audit.record(engine, principal.user_id, "approval.decide", "success", request_id(request),
                       {"task_id": task_id, "approval_id": approval_id, "decision": body.decision})
    log.info("approval_decided", task_id=task_id, approval_id=approval_id, decision=body.decision,
             user_id=principal.user_id)
    return DecisionOut(task_id=task_id, approval_id=approval_id, decision=body.decision)
