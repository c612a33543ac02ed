"""Activities of TaskWorkflow: plan, run a step, finish. Each does its own Postgres writes
(status, ledger, events) so no extra round trip to the Temporal server is spent on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.prompts import step_messages
from core import store
from core.agents import get_agent
from core.contracts import (
    FinishInput,
    PlanInput,
    PlannedStep,
    PlanResult,
    StepInput,
    StepResult,
)
from core.llm import Completion, LLMClient
from core.settings import Settings
from planner.planner import make_plan

if TYPE_CHECKING:
    from memory.service import MemoryService

log = structlog.get_logger(__name__)


def call_key(seq: int = 0) -> str:
    """Unique per (workflow, activity, attempt, call within attempt): a re-delivered activity
    attempt lands on the same ledger row instead of adding one."""
    info = activity.info()
    return f"{info.workflow_id}:{info.activity_id}:{info.attempt}:{seq}"


@dataclass
class TaskActivities:
    engine: AsyncEngine
    llm: LLMClient
    settings: Settings
    memory: MemoryService | None = None  # long-term memory for the planner (issue 6)

    @activity.defn(name="plan_task")
    async def plan_task(self, inp: PlanInput) -> PlanResult:
        existing = await store.existing_plan(self.engine, inp.task_id)
        if existing:  # an earlier attempt planned and wrote it; never re-plan differently
            return PlanResult(steps=[PlannedStep(**s) for s in existing])
        task = await store.load_task(self.engine, inp.task_id)
        async with heartbeating():
            memories = await self._memories_for(task.user_id, task.description)
            outcome = await make_plan(
                self.llm,
                model=self.settings.model,
                description=task.description,
                memories=memories,
                max_steps=self.settings.max_plan_steps,
                max_tokens=self.settings.llm_max_tokens,
            )
        await self._record_calls(inp.task_id, None, "plan", outcome.calls)
        steps = [s.model_dump() for s in outcome.plan.steps]
        await store.save_plan(
            self.engine, inp.task_id, steps, fallback=outcome.fallback, errors=outcome.errors
        )
        if outcome.fallback:
            log.warning("plan_fallback", task_id=inp.task_id, errors=outcome.errors)
        saved = await store.existing_plan(self.engine, inp.task_id)
        return PlanResult(steps=[PlannedStep(**s) for s in saved], fallback=outcome.fallback)

    async def _memories_for(self, user_id: str, description: str) -> list[str]:
        """Top-k of the user's memories for the planner; planning goes on without them if
        memory is unavailable or not ready yet."""
        if self.memory is None or self.settings.memory_top_k_for_planner <= 0:
            return []
        if not self.memory.embedder.loaded:
            # Right after a cold start the model is still loading in the background: plan
            # without memories rather than hold the plan up for seconds.
            log.info("planner_memories_skipped", reason="embedding model still loading")
            return []
        try:
            hits = await self.memory.search(user_id, description, self.settings.memory_top_k_for_planner)
        except Exception as exc:
            log.warning("planner_memories_unavailable", error=str(exc))
            return []
        return [h.text[:1000] for h in hits]

    @activity.defn(name="run_step")
    async def run_step(self, inp: StepInput) -> StepResult:
        ctx = await store.step_context(self.engine, inp.task_id, inp.index)
        if ctx.status == "completed":
            return StepResult(index=inp.index, done=True, preview=(ctx.output or "")[:200], model=ctx.model or "")
        agent = get_agent(ctx.agent)
        model = agent.model or self.settings.model
        async with self.engine.begin() as conn:
            await store.mark_step_started(conn, inp.task_id, inp.index, agent.name)
        messages = step_messages(agent, ctx, max_input_chars=self.settings.short_term_window_chars)
        async with heartbeating():
            completion = await self.llm.complete(
                model=model, messages=messages, max_tokens=self.settings.llm_max_tokens
            )
        output = completion.content or ""
        async with self.engine.begin() as conn:
            await self._record(conn, inp.task_id, inp.index, "step", completion, 0)
            await store.mark_step_finished(
                conn, inp.task_id, inp.index, output=output, model=completion.model
            )
        return StepResult(index=inp.index, done=True, preview=output[:200], model=completion.model)

    @activity.defn(name="finish_task")
    async def finish_task(self, inp: FinishInput) -> str:
        if inp.status not in store.TERMINAL:
            raise ApplicationError(f"not a terminal status: {inp.status}", non_retryable=True)
        result = await store.finish_task(
            self.engine, inp.task_id, inp.status, error=inp.error, failed_step=inp.failed_step
        )
        log.info("task_finished", task_id=inp.task_id, status=inp.status)
        return (result or "")[:200]

    async def _record_calls(
        self, task_id: str, step_index: int | None, purpose: str, calls: list[Completion]
    ) -> None:
        async with self.engine.begin() as conn:
            for seq, c in enumerate(calls):
                await self._record(conn, task_id, step_index, purpose, c, seq)

    async def _record(self, conn, task_id, step_index, purpose, c: Completion, seq: int):  # type: ignore[no-untyped-def]
        await store.record_llm_call(
            conn,
            task_id=task_id,
            step_index=step_index,
            purpose=purpose,
            model=c.model,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            latency_ms=c.latency_ms,
            call_key=call_key(seq),
        )
