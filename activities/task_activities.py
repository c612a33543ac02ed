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
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.heartbeat import heartbeating
from activities.prompts import step_messages
from durable_orchestrator.data import admission, conversation, provenance, steps, tasks
from durable_orchestrator.data.engine import single_statement
from durable_orchestrator.data.tables import TERMINAL
from durable_orchestrator.live.publisher import Publisher, StepStream
from durable_orchestrator.llm.client import Completion, LLMClient
from durable_orchestrator.llm.metered import MeteredLLM, attempt_key
from durable_orchestrator.settings import Settings
from durable_orchestrator.telemetry import metrics
from durable_orchestrator.telemetry.logs import activity_log_context
from durable_orchestrator.temporal.contracts import (
    FINISH_TASK,
    PLAN_TASK,
    RUN_STEP,
    SLOT_GRANTED_SIGNAL,
    TAKE_SLOT,
    FinishInput,
    PlanInput,
    PlannedStep,
    PlanResult,
    StepInput,
    StepResult,
    ToolCallRef,
    workflow_id_for,
)
from durable_orchestrator.tools import REGISTRY, ToolRegistry, ToolRejected
from durable_orchestrator.tools.memory_search import from_fetched_content
from durable_orchestrator.tools.provenance import POLICY_SETTING, PRIVATE, UNTRUSTED, held_back
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


def too_many_calls(seq: int, requested: int, cap: int) -> str:
    return (
        f"not run: this reply asked for {requested} tool calls and at most {cap} run per turn "
        f"(ORCH_MAX_TOOL_CALLS_PER_TURN); this was call {seq + 1}. Ask for it again in your next "
        "reply if you still need it."
    )


@dataclass
class TaskActivities:
    engine: AsyncEngine
    llm: LLMClient
    settings: Settings
    tools: ToolRegistry = field(default_factory=lambda: REGISTRY)
    memory: MemoryService | None = None  # long-term memory for the planner
    deltas: Publisher | None = None  # where the live text of running steps goes
    temporal: Client | None = None  # finish_task wakes queued tasks through it

    @activity.defn(name=PLAN_TASK)
    async def plan_task(self, inp: PlanInput) -> PlanResult:
        with activity_log_context(inp.task_id):
            return await self._plan_task(inp)

    async def _plan_task(self, inp: PlanInput) -> PlanResult:
        # Steps already written: given with the submission (no planning call, nothing to pay),
        # or by an earlier attempt of this activity (never re-plan differently).
        task, existing = await steps.task_and_plan(self.engine, inp.task_id)
        if existing:
            await steps.start_given_plan(self.engine, inp.task_id, existing)
            return PlanResult(steps=[PlannedStep(**s) for s in existing])
        llm = self._metered(inp.task_id, None, "plan", task.options)
        async with heartbeating():
            memories, plan_labels = await self._memories_for(task.user_id, task.description)
            outcome = await make_plan(
                llm,
                model=self.settings.model,
                description=task.description,
                memories=memories,
                max_steps=self.settings.max_plan_steps,
                max_tokens=self.settings.llm_max_tokens,
            )
        planned = [s.model_dump() for s in outcome.plan.steps]

        async def save() -> list[dict[str, Any]]:
            # The plan's labels: its instructions may carry what the memories said.
            async with single_statement(self.engine) as conn:
                return await steps.save_plan(
                    conn, inp.task_id, planned, fallback=outcome.fallback, errors=outcome.errors,
                    labels=plan_labels,
                )

        saved = await recorded_despite_outage(save)
        if outcome.fallback:
            log.warning("plan_fallback", task_id=inp.task_id, errors=outcome.errors)
        log.info("plan_ready", steps=len(saved), fallback=outcome.fallback)
        return PlanResult(steps=[PlannedStep(**s) for s in saved], fallback=outcome.fallback)

    async def _memories_for(self, user_id: str, description: str) -> tuple[list[str], list[str]]:
        """Top-k of the user's memories for the planner, and their provenance labels; planning
        goes on without them if memory is unavailable or not ready yet."""
        if self.memory is None or self.settings.memory_top_k_for_planner <= 0:
            return [], []
        if not self.memory.embedder.loaded:
            # Right after a cold start the model is still loading in the background: plan
            # without memories rather than hold the plan up for seconds.
            log.info("planner_memories_skipped", reason="embedding model still loading")
            return [], []
        try:
            hits = await self.memory.search(user_id, description, self.settings.memory_top_k_for_planner)
        except Exception as exc:
            log.warning("planner_memories_unavailable", error=str(exc))
            return [], []
        labels = {PRIVATE} if hits else set()
        if any(from_fetched_content(h.metadata) for h in hits):
            labels.add(UNTRUSTED)
        return [h.text[:1000] for h in hits], sorted(labels)

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
        # A rerun may name the model of the steps it runs again (options["model"]).
        model = (ctx.options or {}).get("model") or agent.model or self.settings.model
        final_turn = inp.turn >= max(1, inp.max_turns) - 1
        offered = () if final_turn else self.tools.allowed_for(agent.name, agent.tools)
        tools = self.tools.openai_tools(offered) or None
        prompt, messages, labels = await self._messages(inp, ctx, agent, final_turn)
        llm = self._metered(inp.task_id, inp.index, "step", ctx.options)
        live = self._live_text(inp, ctx.watched)
        async with heartbeating():
            try:
                completion = await llm.complete(
                    model=model, messages=messages, max_tokens=self.settings.llm_max_tokens, tools=tools,
                    on_delta=live.write if live else None,
                )
            finally:
                if live is not None:
                    await live.close()
        if completion.tool_calls and not final_turn:
            return await recorded_despite_outage(
                lambda: self._save_tool_turn(inp, agent, prompt, completion, labels)
            )
        return await recorded_despite_outage(lambda: self._finish_step(inp, agent, completion, labels))

    def _live_text(self, inp: StepInput, watched: bool) -> StepStream | None:
        if self.deltas is None or not self.settings.llm_stream:
            return None
        if not (watched or self.settings.llm_stream_unwatched):
            return None
        return StepStream(
            self.deltas, task_id=inp.task_id, step=inp.index, attempt=activity.info().attempt,
            turn=inp.turn, flush_secs=self.settings.stream_flush_secs,
        )

    async def _messages(
        self, inp: StepInput, ctx: steps.StepContext, agent: Agent, final_turn: bool
    ) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]], list[str]]:
        """What to send this turn, the prompt to store with it (the first turn only), and the
        provenance labels of what it contains (read after its sources). The first turn also
        marks the step started; later turns replay the stored conversation."""
        prompt: list[dict[str, Any]] | None = None
        if inp.turn == 0:
            async with single_statement(self.engine) as conn:
                start = await steps.start_step(
                    conn, inp.task_id, inp.index, agent.name,
                    exclude_outputs_of=[d[0] for d in ctx.dependencies],
                )
            labels = start.labels
            memory = short_term.fit(start.entries, self.settings.short_term_window_chars)
            prompt = step_messages(
                agent, ctx, max_input_chars=self.settings.short_term_window_chars,
                memory=short_term.render(memory),
            )
            messages = list(prompt)
        else:
            messages = await conversation.conversation(self.engine, inp.task_id, inp.index)
            labels = await provenance.earlier_turns_labels(self.engine, inp.task_id, inp.index, inp.turn)
        if final_turn and inp.turn > 0:
            messages.append({"role": "user", "content": "The tool-call limit is reached: answer now "
                             "with what you have, without calling tools."})
        return prompt, messages, labels

    async def _finish_step(
        self, inp: StepInput, agent: Agent, completion: Completion, labels: list[str]
    ) -> StepResult:
        """The answer is the step's output: the step, its event and its short-term memory entry in
        one statement."""
        output = completion.content or ""
        if completion.tool_calls:
            log.warning("tool_calls_past_max_turns", task_id=inp.task_id, step=inp.index, turn=inp.turn)
            output = output or "(no answer: the step reached its tool-call limit)"
        keep = short_term.entry(
            kind="output", content=output, ttl_hours=self.settings.short_term_ttl_hours,
            dedupe_key=f"output:{inp.index}", labels=labels,
        )
        async with single_statement(self.engine) as conn:
            await steps.mark_step_finished(
                conn, inp.task_id, inp.index, output=output, model=completion.model, keep=keep
            )
        log.info(
            "step_finished", agent=agent.name, model=completion.model,
            prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
        )
        return StepResult(index=inp.index, done=True, preview=output[:200], model=completion.model, turn=inp.turn)

    async def _save_tool_turn(
        self,
        inp: StepInput,
        agent: Agent,
        prompt: list[dict[str, Any]] | None,
        completion: Completion,
        labels: list[str],
    ) -> StepResult:
        new_calls: list[conversation.NewCall] = []
        cap = max(1, inp.max_tool_calls)
        requested = len(completion.tool_calls)
        for seq, req in enumerate(completion.tool_calls):
            call = conversation.NewCall(
                seq, req.id or f"call_{inp.turn}_{seq}", req.name, req.arguments or "", "validated",
                context_labels=labels,
            )
            if seq >= cap:  # answered with the reason, so the model can ask again next turn
                call.status, call.error = "rejected", too_many_calls(seq, requested, cap)
                new_calls.append(call)
                continue
            try:
                tool, _ = self.tools.validate(
                    req.name, req.arguments, self.tools.allowed_for(agent.name, agent.tools)
                )
            except ToolRejected as exc:
                call.status, call.error = "rejected", str(exc)
                log.warning("tool_call_rejected", task_id=inp.task_id, step=inp.index,
                            turn=inp.turn, tool=req.name, error=str(exc))
            else:
                call.timeout_secs = tool.timeout_secs
                call.reason = held_back(tool, labels)
                if call.reason and self.settings.injection_policy == "refuse":
                    call.status = "rejected"
                    call.error = f"refused: {call.reason} ({POLICY_SETTING}=refuse)"
                    log.warning("tool_call_refused_by_policy", task_id=inp.task_id, step=inp.index,
                                turn=inp.turn, tool=req.name, labels=labels)
                elif tool.requires_approval or call.reason:
                    call.status = "awaiting_approval"
                    key = f"{inp.task_id}:{inp.index}:{inp.turn}:{seq}"
                    call.approval_id = "apr_" + hashlib.sha256(key.encode()).hexdigest()[:20]
                    if call.reason:
                        log.info("tool_call_held_for_approval", task_id=inp.task_id, step=inp.index,
                                 turn=inp.turn, tool=req.name, labels=labels)
            new_calls.append(call)
        async with self.engine.begin() as conn:
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
        # A completed task's result is queued for long-term memory in the same transaction;
        # the worker's memory writer embeds it later, off the task's path (memory/writer.py).
        finished = await tasks.finish_task(
            self.engine, inp.task_id, inp.status, error=inp.error, failed_step=inp.failed_step,
            remember_chars=self.settings.remembered_result_chars,
        )
        log.info("task_finished", task_id=inp.task_id, status=inp.status)
        if inp.free_slot_of:
            await self._wake_queued(await admission.free_slot(self.engine, inp.free_slot_of))
        if finished.age_secs is not None:  # this call ended the task: counted once, not per retry
            metrics.record_task_finished(inp.status, finished.age_secs)
        return (finished.result or "")[:200]

    async def _wake_queued(self, task_ids: list[str]) -> None:
        """Tell admitted tasks' workflows to start. A failure raises, so the retry tells them
        again; a workflow that has already ended has nothing to be told."""
        if self.temporal is None:
            raise ApplicationError("finish_task has no Temporal client to wake queued tasks", non_retryable=True)
        for task_id in task_ids:
            try:
                await self.temporal.get_workflow_handle(workflow_id_for(task_id)).signal(SLOT_GRANTED_SIGNAL)
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
            log.info("queued_task_admitted", admitted_task_id=task_id)

    @activity.defn(name=TAKE_SLOT)
    async def take_slot(self, task_id: str) -> bool:
        with activity_log_context(task_id):
            admitted = await admission.take_slot(self.engine, task_id)
            log.info("task_admitted" if admitted else "task_queued")
            return admitted

    def _metered(self, task_id: str, step_index: int | None, purpose: str, options: Any) -> MeteredLLM:
        """This attempt's LLM calls, each reserved in the ledger before and settled after."""
        return MeteredLLM(
            self.llm, self.engine, self.settings, task_id=task_id, step_index=step_index,
            purpose=purpose, options=options, key_prefix=attempt_key(),
        )
