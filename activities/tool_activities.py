"""run_tool: one tool call of a step, as its own activity with its own timeout and retries.

The call was validated and stored by run_step; this activity re-reads it, applies a human
decision when the tool needed one, runs the handler and stores the result (also in the
task's short-term memory). Expected failures (ToolError) and the last failed attempt are
recorded as `failed` and go back to the LLM as the tool result; the step does not fail."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from durable_orchestrator.data import conversation, provenance
from durable_orchestrator.settings import Settings
from durable_orchestrator.telemetry import metrics
from durable_orchestrator.temporal.contracts import RUN_TOOL, ToolInput, ToolResult
from durable_orchestrator.tools import REGISTRY, ToolContext, ToolError, ToolRegistry, ToolRejected
from durable_orchestrator.tools.provenance import labels_of, result_labels
from durable_orchestrator.tools.registry import MemorySearch, NoteKeeper
from memory import short_term

log = structlog.get_logger(__name__)


def reviewer_rejection(decision: str | None, comment: str | None) -> str:
    if decision == "timeout":
        return f"rejected: no reviewer decided within the approval timeout{f' ({comment})' if comment else ''}"
    return f"rejected by reviewer: {comment or 'no reason given'}"


def _last_attempt() -> bool:
    info = activity.info()
    policy = info.retry_policy
    return policy is not None and policy.maximum_attempts > 0 and info.attempt >= policy.maximum_attempts


@dataclass
class ToolActivities:
    engine: AsyncEngine
    settings: Settings
    tools: ToolRegistry = field(default_factory=lambda: REGISTRY)
    memory_search: MemorySearch | None = None  # long-term memory, injected by the worker

    @activity.defn(name=RUN_TOOL)
    async def run_tool(self, inp: ToolInput) -> ToolResult:
        row = await conversation.load_call(self.engine, inp.task_id, inp.index, inp.turn, inp.seq)
        if row.status in conversation.FINAL:  # an earlier attempt finished it
            return ToolResult(seq=inp.seq, status=row.status, preview=(row.result or row.error or "")[:200])
        decision = None
        if row.approval_id:
            if inp.decision not in ("approve", "reject", "timeout"):
                raise ApplicationError("tool call needs a human decision first", non_retryable=True)
            decision = inp.decision
            if decision != "approve":
                text = reviewer_rejection(decision, inp.comment)
                async with self.engine.begin() as conn:
                    await conversation.finish_call(
                        conn, row, status="rejected", error=text, decision=decision,
                        comment=inp.comment, decided_by=inp.decided_by,
                    )
                metrics.record_tool_call(row.tool, "rejected")
                log.info("tool_call_rejected_by_reviewer", task_id=inp.task_id, tool=row.tool,
                         approval_id=row.approval_id, decision=decision)
                return ToolResult(seq=inp.seq, status="rejected", preview=text[:200])
        try:  # validated when requested; parse again to get the arguments model
            tool, args = self.tools.validate(row.tool, row.arguments, (row.tool,))
        except ToolRejected as exc:
            return await self._done(inp, row, "failed", None, str(exc), 0, decision)
        ctx = ToolContext(
            task_id=row.task_id, user_id=row.user_id, step_index=row.step_index,
            settings=self.settings, keep_note=self._note_keeper(row),
            memory_search=self.memory_search,
        )
        started = time.perf_counter()
        try:
            async with heartbeating():
                result = await asyncio.wait_for(self.tools.execute(tool, args, ctx), tool.timeout_secs)
        except ToolError as exc:
            return await self._done(inp, row, "failed", None, str(exc), _ms(started), decision)
        except TimeoutError:
            message = f"tool {tool.name!r} timed out after {tool.timeout_secs:g}s"
            if not _last_attempt():
                raise ApplicationError(message, type="ToolTimeout") from None
            return await self._done(inp, row, "failed", None, message, _ms(started), decision)
        except Exception as exc:  # unexpected: let Temporal retry, then tell the LLM
            message = f"tool {tool.name!r} failed: {type(exc).__name__}: {exc}"
            log.warning("tool_call_error", task_id=inp.task_id, tool=tool.name, error=message,
                        attempt=activity.info().attempt)
            if not _last_attempt():
                raise ApplicationError(message, type="ToolError") from exc
            return await self._done(inp, row, "failed", None, message, _ms(started), decision)
        found = result_labels(tool, ctx.labels)
        return await self._done(inp, row, "succeeded", result, None, _ms(started), decision, found)

    def _note_keeper(self, row: conversation.CallRow) -> NoteKeeper:
        async def keep_note(content: str, dedupe_key: str) -> None:
            async with self.engine.begin() as conn:
                await short_term.add_entry(
                    conn, task_id=row.task_id, step_index=row.step_index, kind="note",
                    content=content, ttl_hours=self.settings.short_term_ttl_hours,
                    dedupe_key=dedupe_key, labels=row.context_labels,  # the model wrote it
                )

        return keep_note

    async def _done(
        self,
        inp: ToolInput,
        row: conversation.CallRow,
        status: str,
        result: str | None,
        error: str | None,
        latency_ms: int,
        decision: str | None,
        found: list[str] | None = None,
    ) -> ToolResult:
        async with self.engine.begin() as conn:
            await conversation.finish_call(
                conn, row, status=status, result=result, error=error, latency_ms=latency_ms,
                decision=decision, comment=inp.comment if decision else None,
                decided_by=inp.decided_by if decision else None,
            )
            if found:
                await provenance.set_result_labels(conn, row.id, found)
            await short_term.add_entry(
                conn, task_id=row.task_id, step_index=row.step_index, kind="tool_result",
                content=f"{row.tool}({row.arguments[:200]}) -> {result if status == 'succeeded' else 'error: ' + str(error)}"[:4000],
                ttl_hours=self.settings.short_term_ttl_hours,
                dedupe_key=f"tool:{row.step_index}:{row.turn}:{row.seq}",
                labels=labels_of([*row.context_labels, *(found or ())]),
            )
        metrics.record_tool_call(row.tool, status)
        log.info("tool_call_finished", task_id=row.task_id, step=row.step_index, tool=row.tool,
                 status=status, latency_ms=latency_ms)
        return ToolResult(seq=inp.seq, status=status, preview=(result or error or "")[:200])


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
