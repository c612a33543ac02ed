"""An LLM client that routes each call through the circuit breakers, the shared rate limits
and the model fallback chain. It has the same `complete(...)` as the clients in llm/client.py,
so activities keep calling `llm.complete(model=...)` and never see any of this.

For a call asking for model M the chain is M followed by ORCH_MODEL_FALLBACKS (without M):
- a model whose breaker is open (or half-open with its probe in flight) is skipped;
- a retryable failure is counted in that model's breaker; if that opened the breaker and a
  next model exists, the call moves on to it at once; otherwise the error goes to Temporal,
  which retries the activity (honouring Retry-After);
- non-retryable errors (400, 401, ...) are raised as they are: another model will not fix them;
- if every model is refused by its breaker the call waits inside the activity (heartbeating,
  no attempt spent) until the first breaker half-opens, and tries the chain again; only when
  the attempt has no time left for that wait (`llm/waiting.py`) does it fail with a retryable
  `CircuitOpen` error whose `next_retry_delay` is the time until the first breaker half-opens.

The answering model is `Completion.model`, which the step row and the ledger record.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError

from durable_orchestrator.llm.breaker import CircuitBreakers, CircuitOpen, Permit
from durable_orchestrator.llm.client import Completion, DeltaSink, LLMClient
from durable_orchestrator.llm.limits import (
    RATE_LIMITED,
    LLMRateLimiter,
    RedisRateLimiter,
    make_rate_limiter,
)
from durable_orchestrator.llm.token_estimate import estimate_prompt_tokens
from durable_orchestrator.llm.waiting import wait_allowance
from durable_orchestrator.settings import Settings

log = structlog.get_logger(__name__)

CIRCUIT_OPEN = "CircuitOpen"


class LLMRouter:
    def __init__(
        self,
        inner: LLMClient,
        *,
        breakers: CircuitBreakers,
        limiter: LLMRateLimiter | RedisRateLimiter,
        fallbacks: list[str],
        max_wait_secs: float = 0.0,
        call_secs: float = 60.0,
    ) -> None:
        self.inner = inner
        self.provider = inner.provider
        self.breakers = breakers
        self.limiter = limiter
        self.fallbacks = list(fallbacks)
        self.max_wait_secs = max_wait_secs
        self.call_secs = call_secs

    @classmethod
    def from_settings(cls, inner: LLMClient, engine: AsyncEngine, settings: Settings) -> LLMRouter:
        return cls(
            inner,
            breakers=CircuitBreakers(
                engine,
                threshold=settings.circuit_breaker_threshold,
                open_secs=settings.circuit_breaker_timeout_secs,
                probe_stale_secs=settings.llm_timeout_secs + 5,
            ),
            limiter=make_rate_limiter(
                engine,
                redis_url=settings.redis_url,
                rpm=settings.llm_rpm,
                tpm=settings.llm_tpm,
                max_wait_secs=settings.llm_wait_max_secs,
                call_secs=settings.llm_timeout_secs,
            ),
            fallbacks=settings.model_fallbacks,
            max_wait_secs=settings.llm_wait_max_secs,
            call_secs=settings.llm_timeout_secs,
        )

    def breaker_key(self, model: str) -> str:
        return f"{self.provider}:{model}"

    def chain(self, model: str) -> list[str]:
        return list(dict.fromkeys([model, *self.fallbacks]))

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
        chain = self.chain(model)
        waited = 0.0
        while True:
            refused: list[CircuitOpen] = []
            for i, candidate in enumerate(chain):
                try:
                    permit = await self.breakers.acquire(self.breaker_key(candidate))
                except CircuitOpen as err:
                    refused.append(err)
                    continue
                try:
                    completion = await self._call(
                        permit,
                        candidate,
                        messages,
                        max_tokens,
                        response_format,
                        tools,
                        has_next=i + 1 < len(chain),
                        on_delta=on_delta,
                    )
                except _MoveOn:
                    log.warning("llm_fallback", model=candidate, next_model=chain[i + 1])
                    continue
                if candidate != model:
                    log.info("llm_answered_by_fallback", requested=model, model=candidate)
                return completion
            soonest = min(refused, key=lambda e: e.retry_in)
            wait = max(soonest.retry_in.total_seconds(), 0.05)
            allowed = wait_allowance(cap_secs=self.max_wait_secs - waited, call_secs=self.call_secs)
            if wait > allowed:
                raise ApplicationError(
                    f"LLM circuit breaker open for {', '.join(chain)}; next probe in "
                    f"{soonest.retry_in.total_seconds():.1f}s, past what this attempt may wait "
                    f"(waited {waited:.1f}s; ORCH_LLM_WAIT_MAX_SECS, step timeout)",
                    type=CIRCUIT_OPEN,
                    next_retry_delay=max(soonest.retry_in, timedelta(seconds=1)),
                )
            log.info(
                "llm_waiting_for_breaker",
                models=chain,
                wait_secs=round(wait, 2),
                state=soonest.state,
            )
            await asyncio.sleep(wait)  # cancellable; the activity heartbeats meanwhile
            waited += wait

    async def _call(
        self,
        permit: Permit,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None,
        response_format: dict[str, Any] | None,
        tools: list[dict[str, Any]] | None,
        *,
        has_next: bool,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        reserved = estimate_prompt_tokens(messages)
        try:
            await self.limiter.acquire(model, reserved)
            completion = await self.inner.complete(
                model=model,
                messages=messages,
                max_tokens=max_tokens,
                response_format=response_format,
                tools=tools,
                on_delta=on_delta,
            )
        except ApplicationError as err:
            if err.type == RATE_LIMITED:
                await self.breakers.release(permit)
                raise
            if err.non_retryable:
                # The provider answered: it is up, the request is what is wrong.
                await self.breakers.success(permit)
                raise
            opened = await self.breakers.failure(permit, str(err))
            if opened and has_next:
                raise _MoveOn() from err
            raise
        except BaseException:
            # Cancelled (or a bug): no verdict on the provider; free the probe for others.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.breakers.release(permit))
            raise
        await self.breakers.success(permit)
        try:
            await self.limiter.settle(
                model, reserved, completion.prompt_tokens + completion.completion_tokens
            )
        except Exception as exc:  # accounting only: never pay for the answer twice over it
            log.warning("llm_rate_settle_failed", model=model, error=str(exc)[:200])
        return completion

    async def close(self) -> None:
        await self.inner.close()


class _MoveOn(Exception):
    """Internal: this model's breaker just opened; try the next model in the chain."""
