"""POST /tasks/{id}/rerun: a new task from a finished one that runs only what must run again.

The rerun keeps the parent's plan (with the client's edits) and reuses the recorded output of
every step that is neither `from_step`, nor edited, nor downstream of one of those, nor left
unfinished by the parent: those steps are written completed, with no LLM call and no cost, and
link to the task that produced them. The rest run durably as in any task."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Request, status

from api.deps import EngineDep, SettingsDep, TemporalDep, request_id, require
from api.errors import ERROR_RESPONSES, APIError
from api.rate_limits import rate_limited
from api.routes.tasks import _accepted, _start_workflow
from api.schemas import RerunRequest, TaskAccepted
from durable_orchestrator.auth.api_keys import Principal
from durable_orchestrator.data import audit, reruns, tasks
from durable_orchestrator.data.tables import TERMINAL
from durable_orchestrator.settings import Settings
from durable_orchestrator.telemetry import metrics
from planner.agents import AGENTS
from planner.models import PlanInvalid, downstream, validate_plan

router = APIRouter(prefix="/tasks", tags=["tasks"], responses=ERROR_RESPONSES)
log = structlog.get_logger(__name__)

WriteUser = Annotated[Principal, require("tasks:write")]


def _invalid(field: str, message: str) -> APIError:
    return APIError(
        422,
        "validation_error",
        f"invalid request: {field} ({message})",
        [{"field": field, "message": message}],
    )


def _edits(name: str, edits: dict[str, str] | None, n: int) -> dict[int, str]:
    """Edits keyed by step index, each naming a step of the plan."""
    out: dict[int, str] = {}
    for key, value in (edits or {}).items():
        if not key.isdigit() or int(key) >= n:
            raise _invalid(
                f"{name}.{key}", f"no step {key!r} in the task's plan (steps 0 to {n - 1})"
            )
        out[int(key)] = value
    return out


def _plan_error(error: str) -> dict[str, str]:
    """The planner's "steps.1.agent: problem", said of the field the client sent."""
    where, _, message = error.partition(": ")
    parts = where.split(".")
    field = "plan"
    if len(parts) == 3 and parts[0] == "steps":
        field = {"instructions": "instructions", "agent": "agents"}.get(
            parts[2], "plan"
        ) + f".{parts[1]}"
    return {"field": field, "message": f"{field}: {message}" if message else error}


def rerun_plan(
    parent: reruns.ParentTask, body: RerunRequest, settings: Settings
) -> list[reruns.RerunStep] | None:
    """The rerun's steps, each reused or to run; None when the planner is to plan again."""
    if body.replan:
        if body.from_step is not None or body.instructions is not None or body.agents is not None:
            raise _invalid(
                "replan",
                "plans again from the description: not with from_step, instructions or agents",
            )
        return None
    if body.from_step is None:
        raise _invalid("from_step", "required (or replan: true)")
    n = len(parent.steps)
    if n == 0:
        raise APIError(
            409, "no_plan", f"task {parent.id} has no plan to rerun; rerun it with replan: true"
        )
    if body.from_step >= n:
        raise _invalid("from_step", f"out of range: the plan has steps 0 to {n - 1}")
    instructions = _edits("instructions", body.instructions, n)
    agents = _edits("agents", body.agents, n)
    for index, agent in agents.items():
        if agent not in AGENTS:
            raise _invalid(
                f"agents.{index}", f"unknown agent {agent!r}; use one of {', '.join(AGENTS)}"
            )
    edited = [
        {
            "title": s.title,
            "agent": agents.get(s.index, s.agent),
            "instructions": instructions.get(s.index, s.instructions),
            "depends_on": list(s.depends_on),
        }
        for s in parent.steps
    ]
    try:  # the edited plan passes the planner's rules, as a client plan would
        validate_plan(edited, max_steps=max(n, settings.max_plan_steps))
    except PlanInvalid as exc:
        details = [_plan_error(e) for e in exc.errors]
        raise APIError(
            422,
            "validation_error",
            "invalid request: " + "; ".join(d["message"] for d in details),
            details,
        ) from None
    unfinished = {s.index for s in parent.steps if s.status != "completed"}
    again = downstream(
        [s["depends_on"] for s in edited], {body.from_step, *instructions, *agents, *unfinished}
    )
    return [
        reruns.RerunStep(
            agent=e["agent"],
            title=e["title"],
            instructions=e["instructions"],
            depends_on=e["depends_on"],
            reuse=None if i in again else parent.steps[i],
        )
        for i, e in enumerate(edited)
    ]


@router.post(
    "/{task_id}/rerun",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    summary="Rerun a finished task from a step",
    description="A new task (`parent_task_id`, `rerun_of_step`) with the parent's plan and edits. "
    "Steps that are not `from_step`, not edited and not downstream of those reuse the parent's "
    "recorded output (no LLM call, no cost; `reused: true`); the others run. `replan: true` plans "
    "again instead. Only the owner may rerun (404 otherwise); 409 while the task is unfinished.",
    dependencies=[rate_limited("task_submit", "rate_limit", per="key")],
)
async def rerun_task(
    task_id: str,
    body: RerunRequest,
    request: Request,
    principal: WriteUser,
    engine: EngineDep,
    settings: SettingsDep,
    _temporal: TemporalDep,
) -> TaskAccepted:
    parent = await reruns.load_parent(engine, task_id, principal.user_id)
    if parent is None:
        raise APIError(404, "not_found", f"task {task_id} not found")
    if parent.status not in TERMINAL:
        raise APIError(
            409,
            "task_not_finished",
            f"task {task_id} is still {parent.status}; rerun it once it has finished",
        )
    steps = rerun_plan(parent, body, settings)
    options = {**parent.options, **({"model": body.model} if body.model else {})}
    new_id = tasks.new_task_id()
    async with engine.begin() as conn:
        await reruns.insert_rerun(
            conn,
            task_id=new_id,
            user_id=principal.user_id,
            parent=parent,
            options=options,
            steps=steps,
            from_step=body.from_step,
            task_queue=settings.task_queue,
        )
    # A start that fails leaves the row to the reconciler, as for any submission.
    await _start_workflow(request, new_id, principal.user_id, parent.description, options, bounded=False)
    metrics.TASKS_SUBMITTED.inc()
    reused = [i for i, s in enumerate(steps or []) if s.reuse]
    await audit.record(
        engine,
        principal.user_id,
        "task.rerun",
        "success",
        request_id(request),
        {
            "task_id": new_id,
            "parent_task_id": task_id,
            "from_step": body.from_step,
            "reused_steps": reused,
            "replan": body.replan,
        },
    )
    log.info("task_rerun", task_id=new_id, parent_task_id=task_id, reused_steps=reused)
    return _accepted(request, new_id, "pending")
