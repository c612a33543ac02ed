"""The LLM client as one activity attempt sees it: every call goes through the ledger.

Before the call its worst case is reserved (llm/budget.py: refused if it could break a budget);
after it the row is settled with the usage the provider reported, priced by the model that
answered (else the one asked for); if the call fails the reservation is released. A worker that
dies between the two leaves the row `reserved`, and it keeps counting at its worst case.

Keys are `<workflow id>:<run id>:<activity id>:<attempt>:<n>`: a retried attempt or a reset
workflow (a new run) gets new rows, never an old run's."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from durable_orchestrator.data import ledger
from durable_orchestrator.data.engine import single_statement
from durable_orchestrator.llm import budget
from durable_orchestrator.llm.client import Completion, DeltaSink, LLMClient
from durable_orchestrator.settings import Settings

log = structlog.get_logger(__name__)


def attempt_key() -> str:
    """Unique per (workflow run, activity, attempt)."""
    info = activity.info()
    return f"{info.workflow_id}:{info.workflow_run_id}:{info.activity_id}:{info.attempt}"


@dataclass
class MeteredLLM:
    """An LLMClient for one task's calls within one activity attempt."""

    inner: LLMClient
    engine: AsyncEngine
    settings: Settings
    task_id: str
    step_index: int | None
    purpose: str
    options: dict[str, Any] | None
    key_prefix: str
    _seq: int = field(default=0, init=False)

    @property
    def provider(self) -> str:
        return self.inner.provider

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        key = f"{self.key_prefix}:{self._seq}"
        self._seq += 1
        await budget.reserve(
            self.engine,
            self.settings,
            task_id=self.task_id,
            step_index=self.step_index,
            purpose=self.purpose,
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            call_key=key,
            extra=[tools, response_format] if tools or response_format else None,
            options=self.options,
        )
        try:
            completion = await self.inner.complete(
                model=model,
                messages=messages,
                max_tokens=max_tokens,
                response_format=response_format,
                tools=tools,
                on_delta=on_delta,
            )
        except BaseException:
            # This worker knows the call failed (or was cancelled): free its reservation.
            with contextlib.suppress(Exception):
                await asyncio.shield(ledger.release(self.engine, key))
            raise
        async with single_statement(self.engine) as conn:
            await ledger.record_llm_call(
                conn,
                task_id=self.task_id,
                step_index=self.step_index,
                purpose=self.purpose,
                model=completion.model,
                requested_model=model,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                latency_ms=completion.latency_ms,
                call_key=key,
                overrides_file=self.settings.prices_file,
            )
        return completion

    async def close(self) -> None:
        await self.inner.close()
