"""Activities of TaskWorkflow: plan, run a step, finish. Each does its own Postgres writes
(status, ledger, events) so no extra round trip to the Temporal server is spent on them."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.prompts import step_messages
from durable_orchestrator.data import conversation, ledger, steps, tasks
from durable_orchestrator.data.tables import TERMINAL
from durable_orchestrator.llm import budget
from durable_orchestrator.llm.client import Completion, LLMClient
from durable_orchestrator.settings import Settings
from durable_orchestrator.telemetry import metrics
from durable_orchestrator.telemetry.logs import activity_log_context
from durable_orchestrator.temporal.contracts import (
    FINISH_TASK,
    PLAN_TASK,
    RUN_STEP,
    FinishInput,
    PlanInput,
    PlannedStep,
    PlanResult,
    StepInput,
    StepResult,
    ToolCallRef,
)
from durable_orchestrator.tools import REGISTRY, ToolRegistry, ToolRejected
from memory import short_term
from planner.agents import Agent, get_agent
from planner.planner import make_plan

if TYPE_CHECKING:
    from memory.service import MemoryService

log = structlog.get_logger(__name__)
T = TypeVar("T")


async def recorded_despite_outage(write: Callable[[], Awaitable[T]]) -> T:
    """Run `write`, the transaction that records an answer the provider has already sent (and
    billed), until the database takes it. Failing the attempt instead would make Temporal
    call the provider again and leave the first answer out of the ledger. Only connection
    trouble is waited out; the activity's start-to-close timeout bounds the wait."""
    delay = 0.2
    while True:
        try:
            return await write()
        except (IntegrityError, ProgrammingError, DataError):
            raise
        except (DBAPIError, OSError) as exc:
            log.warning("answer_not_recorded_yet", error=type(exc).__name__, retry_in=delay)
        activity.heartbeat()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


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
    tools: ToolRegistry = field(default_factory=lambda: REGISTRY)
    memory: MemoryService | None = None  # long-term memory for the planner (issue 6)

    @activity.defn(name=PLAN_TASK)
    async def plan_task(self, inp: PlanInput) -> PlanResult:
        with activity_log_context(inp.task_id):
            return await self._plan_task(inp)

    async def _plan_task(self, inp: PlanInput) -> PlanResult:
        existing = await steps.existing_plan(self.engine, inp.task_id)
        if existing:  # an earlier attempt planned and wrote it; never re-plan differently
            return PlanResult(steps=[PlannedStep(**s) for s in existing])
        task = await tasks.load_task(self.engine, inp.task_id)

        async def check_budget(messages: list[dict[str, Any]]) -> None:
            await budget.check(
                self.engine, self.settings, task_id=inp.task_id, model=self.settings.model,
                messages=messages, max_tokens=self.settings.llm_max_tokens, options=task.options,
            )

        async with heartbeating():
            memories = await self._memories_for(task.user_id, task.description)
            outcome = await make_plan(
                self.llm,
                model=self.settings.model,
                description=task.description,
                memories=memories,
                max_steps=self.settings.max_plan_steps,
                max_tokens=self.settings.llm_max_tokens,
                before_call=check_budget,
            )
        planned = [s.model_dump() for s in outcome.plan.steps]

        async def save() -> list[dict[str, Any]]:
            async with self.engine.begin() as conn:  # ledger + plan in one transaction
                for seq, c in enumerate(outcome.calls):
                    await self._record(conn, inp.task_id, None, "plan", c, seq)
                return await steps.save_plan(
                    conn, inp.task_id, planned, fallback=outcome.fallback, errors=outcome.errors
                )

        saved = await recorded_despite_outage(save)
        if outcome.fallback:
            log.warning("plan_fallback", task_id=inp.task_id, errors=outcome.errors)
        log.info("plan_ready", steps=len(saved), fallback=outcome.fallback)
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

    @activity.defn(name=RUN_STEP)
    async def run_step(self, inp: StepInput) -> StepResult:
        """One LLM turn of a step. The model answers (step completed) or asks for tools: the
        calls are validated and stored, and the valid ones returned for the workflow to run."""
        started = time.perf_counter()
        with activity_log_context(inp.task_id, inp.index, agent=inp.agent):
            try:
                return await self._run_step(inp)
            finally:
                metrics.STEP_DURATION.labels(inp.agent).observe(time.perf_counter() - started)

    async def _run_step(self, inp: StepInput) -> StepResult:
        ctx = await steps.step_context(self.engine, inp.task_id, inp.index)
        if ctx.status == "completed":
            return StepResult(index=inp.index, done=True, preview=(ctx.output or "")[:200], model=ctx.model or "")
        if activity.info().attempt > 1:  # an earlier attempt may have committed this turn
            saved = await conversation.saved_turn(self.engine, inp.task_id, inp.index, inp.turn)
            if saved is not None:
                return self._tool_turn_result(inp, saved)
        agent = get_agent(ctx.agent)
        model = agent.model or self.settings.model
        final_turn = inp.turn >= max(1, inp.max_turns) - 1
        offered = () if final_turn else tuple(t for t in agent.tools if t in self.tools.tools)
        tools = self.tools.openai_tools(offered) or None
        prompt, messages = await self._messages(inp, ctx, agent, final_turn)
        await budget.check(
            self.engine, self.settings, task_id=inp.task_id, model=model, messages=messages,
            max_tokens=self.settings.llm_max_tokens, extra=tools, options=ctx.options,
        )
        async with heartbeating():
            completion = await self.llm.complete(
                model=model, messages=messages, max_tokens=self.settings.llm_max_tokens, tools=tools
            )
        if completion.tool_calls and not final_turn:
            return await recorded_despite_outage(
                lambda: self._save_tool_turn(inp, agent, prompt, completion)
            )
        return await recorded_despite_outage(lambda: self._finish_step(inp, agent, completion))

    async def _messages(
        self, inp: StepInput, ctx: steps.StepContext, agent: Agent, final_turn: bool
    ) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]:
        """What to send this turn, and the prompt to store with it (the first turn only). The
        first turn also marks the step started; later turns replay the stored conversation."""
        prompt: list[dict[str, Any]] | None = None
        if inp.turn == 0:
            async with self.engine.begin() as conn:  # one round of BEGIN/COMMIT for both
                await steps.mark_step_started(conn, inp.task_id, inp.index, agent.name)
                memory = await short_term.window(
                    conn, inp.task_id, exclude_step=inp.index,
                    exclude_outputs_of=[d[0] for d in ctx.dependencies],
                    max_chars=self.settings.short_term_window_chars,
                )
            prompt = step_messages(
                agent, ctx, max_input_chars=self.settings.short_term_window_chars,
                memory=short_term.render(memory),
            )
            messages = list(prompt)
        else:
            messages = await conversation.conversation(self.engine, inp.task_id, inp.index)
        if final_turn and inp.turn > 0:
            messages.append({"role": "user", "content": "The tool-call limit is reached: answer now "
                             "with what you have, without calling tools."})
        return prompt, messages

    async def _finish_step(self, inp: StepInput, agent: Agent, completion: Completion) -> StepResult:
        """The answer is the step's output: ledger, step, event and short-term memory at once."""
        output = completion.content or ""
        if completion.tool_calls:
            log.warning("tool_calls_past_max_turns", task_id=inp.task_id, step=inp.index, turn=inp.turn)
            output = output or "(no answer: the step reached its tool-call limit)"
        async with self.engine.begin() as conn:
            await self._record(conn, inp.task_id, inp.index, "step", completion, 0)
            await steps.mark_step_finished(
                conn, inp.task_id, inp.index, output=output, model=completion.model
            )
            await short_term.add_entry(
                conn, task_id=inp.task_id, step_index=inp.index, kind="output", content=output,
                ttl_hours=self.settings.short_term_ttl_hours, dedupe_key=f"output:{inp.index}",
            )
        log.info(
            "step_finished", agent=agent.name, model=completion.model,
            prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
        )
        return StepResult(index=inp.index, done=True, preview=output[:200], model=completion.model, turn=inp.turn)

    async def _save_tool_turn(
        self, inp: StepInput, agent: Agent, prompt: list[dict[str, Any]] | None, completion: Completion
    ) -> StepResult:
        new_calls: list[conversation.NewCall] = []
        for seq, req in enumerate(completion.tool_calls):
            call = conversation.NewCall(seq, req.id or f"call_{inp.turn}_{seq}", req.name, req.arguments or "", "validated")
            try:
                tool, _ = self.tools.validate(req.name, req.arguments, agent.tools)
            except ToolRejected as exc:
                call.status, call.error = "rejected", str(exc)
                log.warning("tool_call_rejected", task_id=inp.task_id, step=inp.index,
                            turn=inp.turn, tool=req.name, error=str(exc))
            else:
                call.timeout_secs = tool.timeout_secs
                if tool.requires_approval:
                    call.status = "awaiting_approval"
                    key = f"{inp.task_id}:{inp.index}:{inp.turn}:{seq}"
                    call.approval_id = "apr_" + hashlib.sha256(key.encode()).hexdigest()[:20]
            new_calls.append(call)
        async with self.engine.begin() as conn:
            await self._record(conn, inp.task_id, inp.index, "step", completion, 0)
            await conversation.save_turn(
                conn, task_id=inp.task_id, step_index=inp.index, turn=inp.turn, prompt=prompt,
                assistant=conversation.assistant_message(completion.content, new_calls), calls=new_calls,
            )
        # Another attempt may have committed this turn first; its calls are the ones that count.
        saved = await conversation.saved_turn(self.engine, inp.task_id, inp.index, inp.turn)
        return self._tool_turn_result(inp, saved or new_calls, model=completion.model)

    def _timeout_of(self, name: str) -> float:
        tool = self.tools.tools.get(name)
        return tool.timeout_secs if tool else 10.0

    def _tool_turn_result(self, inp: StepInput, calls: list[conversation.NewCall], model: str = "") -> StepResult:
        refs = [
            ToolCallRef(seq=c.seq, call_id=c.call_id, tool=c.tool,
                        timeout_secs=self._timeout_of(c.tool),
                        approval_id=c.approval_id)
            for c in calls if c.status != "rejected"
        ]
        return StepResult(index=inp.index, done=False, model=model, turn=inp.turn, tool_calls=refs)

    @activity.defn(name=FINISH_TASK)
    async def finish_task(self, inp: FinishInput) -> str:
        with activity_log_context(inp.task_id):
            return await self._finish_task(inp)

    async def _finish_task(self, inp: FinishInput) -> str:
        if inp.status not in TERMINAL:
            raise ApplicationError(f"not a terminal status: {inp.status}", non_retryable=True)
        result = await tasks.finish_task(
            self.engine, inp.task_id, inp.status, error=inp.error, failed_step=inp.failed_step
        )
        log.info("task_finished", task_id=inp.task_id, status=inp.status)
        if activity.info().attempt == 1:  # count each task once, not once per retry
            metrics.record_task_finished(inp.status, await tasks.task_age_secs(self.engine, inp.task_id))
        return (result or "")[:200]

    async def _record(self, conn, task_id, step_index, purpose, c: Completion, seq: int):  # type: ignore[no-untyped-def]
        await ledger.record_llm_call(
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
