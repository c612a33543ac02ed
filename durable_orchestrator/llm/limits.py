"""Requests-per-minute and tokens-per-minute caps per model, shared by all workers.

A token bucket per (kind, model) in the `llm_rate_buckets` table: capacity = the per-minute
cap, refilled continuously at cap/60 per second, updated under a row lock so all workers draw
from the same bucket. Before a call we take 1 request and the prompt's estimated tokens; after
it we settle the difference with the real usage (the bucket may go negative: that debt delays
later callers instead of letting a burst through). The statements are in
`durable_orchestrator.data.rate_buckets`.

When a bucket is short, the caller waits in the activity (heartbeating, so cancellation still
works, and no Temporal attempt is spent) as long as the attempt's timeout allows
(`llm/waiting.py`); past that it raises a retryable ApplicationError with `next_retry_delay` =
when capacity returns, so Temporal waits and the provider never sees a 429 storm.

Postgres, not Redis: it is always present and already shared; one short locked update per call
is cheap next to an LLM call. Unset caps (the default) skip all of this.
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError

from durable_orchestrator.data import rate_buckets
from durable_orchestrator.llm.waiting import wait_allowance

log = structlog.get_logger(__name__)

RATE_LIMITED = "LLMRateLimited"


class _WaitOrRetry:
    """The waiting policy both stores share: wait inside the activity for short shortages,
    hand longer ones back to Temporal as a retryable error with `next_retry_delay`."""

    store = "postgres"
    rpm: int | None
    tpm: int | None
    max_wait_secs: float
    call_secs: float = 60.0

    @property
    def enabled(self) -> bool:
        raise NotImplementedError

    async def _take(self, model: str, prompt_tokens: int) -> float:
        """Take capacity for one call; 0 when taken, else seconds until there is some."""
        raise NotImplementedError

    async def acquire(self, model: str, prompt_tokens: int) -> None:
        """Block briefly or raise a retryable LLMRateLimited error with next_retry_delay."""
        if not self.enabled:
            return
        waited = 0.0
        while True:
            wait = await self._take(model, prompt_tokens)
            if wait <= 0:
                return
            allowed = wait_allowance(cap_secs=self.max_wait_secs - waited, call_secs=self.call_secs)
            if wait > allowed:
                log.info("llm_rate_limited", model=model, retry_in=round(wait, 2), store=self.store)
                raise ApplicationError(
                    f"LLM rate limit for {model} reached (ORCH_LLM_RPM={self.rpm}, "
                    f"ORCH_LLM_TPM={self.tpm}); capacity returns in {wait:.1f}s, past what this "
                    f"attempt may wait (ORCH_LLM_WAIT_MAX_SECS, step timeout)",
                    type=RATE_LIMITED,
                    next_retry_delay=timedelta(seconds=math.ceil(wait)),
                )
            await asyncio.sleep(wait)  # cancellable: a cancelled activity stops waiting here
            waited += wait


class LLMRateLimiter(_WaitOrRetry):
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        rpm: int | None,
        tpm: int | None,
        max_wait_secs: float = 10.0,
        call_secs: float = 60.0,
    ) -> None:
        self.engine = engine
        self.rpm = rpm or None
        self.tpm = tpm or None
        self.max_wait_secs = max_wait_secs
        self.call_secs = call_secs

    @property
    def enabled(self) -> bool:
        return bool(self.rpm or self.tpm)

    def _caps(self, model: str) -> dict[str, float]:
        caps: dict[str, float] = {}
        if self.rpm:
            caps[f"rpm:{model}"] = float(self.rpm)
        if self.tpm:
            caps[f"tpm:{model}"] = float(self.tpm)
        return caps

    async def _take(self, model: str, prompt_tokens: int) -> float:
        """Take capacity from every bucket, or from none. Seconds to wait (0 = taken).

        One statement per bucket, in autocommit: the conditional upsert refills, checks and
        takes under the row lock Postgres holds for the statement, so concurrent workers never
        both take the last token, and the lock is held for microseconds, not a transaction.
        A call wanting more tokens than the cap reserves the cap: it could never be granted."""
        draws = [
            rate_buckets.Draw(
                key, cap, 1.0 if key.startswith("rpm:") else min(float(prompt_tokens), cap)
            )
            for key, cap in self._caps(model).items()
        ]
        wait = await rate_buckets.take(self.engine, draws)
        return 0.0 if wait is None else max(wait, 0.01)

    async def settle(self, model: str, reserved_tokens: int, used_tokens: int) -> None:
        """Charge the real token usage against the TPM bucket (refunds over-estimates)."""
        if not self.tpm or used_tokens == reserved_tokens:
            return
        await rate_buckets.charge(
            self.engine,
            f"tpm:{model}",
            cap=float(self.tpm),
            tokens=float(used_tokens - min(reserved_tokens, self.tpm)),
        )


class RedisRateLimiter(_WaitOrRetry):
    """The same caps on Redis (REDIS_URL), with the `limits` library's moving window.

    For deployments that already run Redis for shared limits: no row lock per call in
    Postgres. RPM and TPM are checked one after the other (not atomically together), so a
    request refused on TPM may have used one RPM slot: conservative, never over the cap."""

    store = "redis"

    def __init__(
        self,
        redis_url: str,
        *,
        rpm: int | None,
        tpm: int | None,
        max_wait_secs: float = 10.0,
        call_secs: float = 60.0,
    ) -> None:
        from limits import RateLimitItemPerMinute
        from limits.aio.strategies import MovingWindowRateLimiter
        from limits.storage import storage_from_string

        uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
        self.storage = storage_from_string(uri, implementation="redispy", key_prefix="orch-llm")
        self.window = MovingWindowRateLimiter(self.storage)
        self.rpm_item = RateLimitItemPerMinute(rpm) if rpm else None
        self.tpm_item = RateLimitItemPerMinute(tpm) if tpm else None
        self.rpm, self.tpm = rpm or None, tpm or None
        self.max_wait_secs = max_wait_secs
        self.call_secs = call_secs

    @property
    def enabled(self) -> bool:
        return bool(self.rpm or self.tpm)

    async def _take(self, model: str, prompt_tokens: int) -> float:
        import time

        for item, cost in ((self.rpm_item, 1), (self.tpm_item, prompt_tokens)):
            if item is None:
                continue
            cost = min(cost, item.amount)
            if not await self.window.hit(item, model, cost=cost):
                stats = await self.window.get_window_stats(item, model)
                return max(0.05, stats.reset_time - time.time())
        return 0.0

    async def settle(self, model: str, reserved_tokens: int, used_tokens: int) -> None:
        """Charge tokens used beyond the reservation (a moving window cannot refund)."""
        if self.tpm_item is None or used_tokens <= reserved_tokens:
            return
        extra = used_tokens - reserved_tokens
        if not await self.window.hit(self.tpm_item, model, cost=min(extra, self.tpm_item.amount)):
            stats = await self.window.get_window_stats(self.tpm_item, model)
            if stats.remaining > 0:  # fill the window: later callers wait for it to move
                await self.window.hit(self.tpm_item, model, cost=stats.remaining)


def make_rate_limiter(
    engine: AsyncEngine,
    *,
    redis_url: str | None,
    rpm: int | None,
    tpm: int | None,
    max_wait_secs: float,
    call_secs: float = 60.0,
) -> LLMRateLimiter | RedisRateLimiter:
    """Redis when REDIS_URL is set (and a cap is), else the Postgres buckets."""
    if redis_url and (rpm or tpm):
        return RedisRateLimiter(
            redis_url, rpm=rpm, tpm=tpm, max_wait_secs=max_wait_secs, call_secs=call_secs
        )
    return LLMRateLimiter(
        engine, rpm=rpm, tpm=tpm, max_wait_secs=max_wait_secs, call_secs=call_secs
    )
