"""Circuit breaker per provider+model, its state in Postgres so every worker sees the same one.

Why Postgres and not Redis: Postgres is always there (every activity already writes to it),
it is durable across restarts, and a row lock (`SELECT ... FOR UPDATE`) makes each transition
atomic across workers without a second moving part. The hot path (breaker closed) is one
primary-key read without a lock; only calls that meet a non-closed breaker or record a
failure take the row lock. Times come from the database clock, so workers with skewed clocks
agree on when an open breaker may be probed. The statements are in
`durable_orchestrator.data.breakers`; this module decides which one runs when.

States: closed → (CIRCUIT_BREAKER_THRESHOLD consecutive retryable failures) → open for
CIRCUIT_BREAKER_TIMEOUT_SECS → half_open: exactly one caller gets the probe; its success
closes the breaker, its failure re-opens it. While open, `acquire` raises `CircuitOpen`
carrying the time until half-open; the LLM router waits that long inside the activity (or,
when the attempt has no time left for it, hands it to Temporal as `next_retry_delay`).

Every transition bumps the row's generation and every permit carries the generation it was
issued under: a call admitted while the breaker was closed that answers after it opened
does not close it again (only the half-open probe does), and its failure after a probe
closed the breaker does not count against the new closed state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import breakers

log = structlog.get_logger(__name__)

STATE_VALUES = {"closed": 0, "open": 1, "half_open": 2}

BREAKER_STATE = Gauge(
    "circuit_breaker_state",
    "LLM circuit breaker state per model: 0 closed, 1 open, 2 half_open",
    ["model"],
)


class CircuitOpen(Exception):
    """The breaker refuses the call; `retry_in` is the time until a probe may be tried."""

    def __init__(self, key: str, retry_in: timedelta, state: str) -> None:
        super().__init__(
            f"circuit breaker {key} is {state}; retry in {retry_in.total_seconds():.1f}s"
        )
        self.key = key
        self.retry_in = retry_in
        self.state = state


@dataclass
class Permit:
    """Permission for one call, issued under one generation of the breaker's state. `probe`
    is True for the single half-open trial call."""

    key: str
    probe: bool = False
    failures_seen: int = 0
    generation: int = 0


def model_of(key: str) -> str:
    return key.split(":", 1)[-1]


def _set_gauge(key: str, state: str) -> None:
    BREAKER_STATE.labels(model=model_of(key)).set(STATE_VALUES.get(state, 0))


class CircuitBreakers:
    """All breakers of one process; the state itself lives in the `circuit_breakers` table."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        threshold: int,
        open_secs: float,
        probe_stale_secs: float = 60.0,
    ) -> None:
        self.engine = engine
        self.threshold = threshold
        self.open_for = timedelta(seconds=open_secs)
        self.probe_stale = timedelta(seconds=probe_stale_secs)

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    async def acquire(self, key: str) -> Permit:
        """Permit a call, or raise CircuitOpen."""
        if not self.enabled:
            return Permit(key)
        row = await breakers.state(self.engine, key)
        if row is None or row.state == "closed":
            return _closed_permit(key, row)
        async with self.engine.begin() as conn:
            row = await breakers.lock(conn, key)
            if row is None or row.state == "closed":
                return _closed_permit(key, row)
            if row.state == "open" and row.open_until is not None and row.now < row.open_until:
                _set_gauge(key, "open")
                raise CircuitOpen(key, row.open_until - row.now, "open")
            stale = (
                row.probe_started_at is None or row.now - row.probe_started_at > self.probe_stale
            )
            if row.state == "half_open" and not stale:
                _set_gauge(key, "half_open")
                wait = self.probe_stale - (row.now - row.probe_started_at)
                # Look again soon: a probe against a dead provider fails fast and re-opens.
                soon = min(timedelta(seconds=5), max(self.open_for, timedelta(seconds=1)))
                raise CircuitOpen(key, min(max(wait, timedelta(seconds=1)), soon), "half_open")
            # open and its time is up, or a half-open probe that never reported back: probe now
            # (a new generation, so the stale probe's late verdict no longer counts).
            generation = await breakers.start_probe(conn, key)
        _set_gauge(key, "half_open")
        log.info("circuit_half_open", breaker=key)
        return Permit(key, probe=True, failures_seen=row.failures, generation=generation)

    async def success(self, permit: Permit) -> None:
        """The provider answered. Only the probe closes a breaker; a call admitted while it was
        closed resets the failure count only if the breaker has not changed state since."""
        if not self.enabled or (not permit.probe and permit.failures_seen == 0):
            return  # nothing to reset: the common case costs no write
        async with self.engine.begin() as conn:
            row = await breakers.lock(conn, permit.key)
            if row is None or row.generation != permit.generation:
                log.info(
                    "circuit_verdict_stale",
                    breaker=permit.key,
                    verdict="success",
                    permit_generation=permit.generation,
                )
                return
            if permit.probe:
                await breakers.close(conn, permit.key)
            else:
                await breakers.reset_failures(conn, permit.key)
        _set_gauge(permit.key, "closed")
        if permit.probe:
            log.info("circuit_closed", breaker=permit.key)

    async def failure(self, permit: Permit, error: str) -> bool:
        """Count a retryable failure; True when the breaker is open after it.

        A failure of a call admitted under an earlier generation is not counted: the breaker
        has judged the provider since (it opened, or a probe closed it)."""
        if not self.enabled:
            return False
        async with self.engine.begin() as conn:
            await breakers.ensure(conn, permit.key)
            row = await breakers.lock(conn, permit.key)
            assert row is not None  # ensured just above, in this transaction
            if row.generation != permit.generation:
                return bool(row.state == "open")
            failures = row.failures + 1
            opens = row.state == "half_open" or (
                row.state == "closed" and failures >= self.threshold
            )
            if opens:
                await breakers.open_(
                    conn, permit.key, failures=failures, open_for=self.open_for, error=error[:500]
                )
                state = "open"
            else:
                await breakers.count_failure(conn, permit.key, failures=failures, error=error[:500])
                state = row.state
        _set_gauge(permit.key, state)
        if opens:
            log.warning(
                "circuit_opened",
                breaker=permit.key,
                failures=failures,
                error=error[:200],
                open_secs=self.open_for.total_seconds(),
            )
        return state == "open"

    async def release(self, permit: Permit) -> None:
        """The call ended without a verdict (cancelled): let another caller probe."""
        if not self.enabled or not permit.probe:
            return
        await breakers.release_probe(self.engine, permit.key, permit.generation)


def _closed_permit(key: str, row: Any) -> Permit:
    if row is None:
        return Permit(key)
    return Permit(key, failures_seen=row.failures, generation=row.generation)


async def breaker_states(engine: AsyncEngine) -> list[dict[str, object]]:
    """Every breaker as readiness and metrics show it; also refreshes the gauge in this process.

    An open breaker whose time is up is reported as half_open: the next call will probe."""
    rows = await breakers.all_states(engine)
    out: list[dict[str, object]] = []
    for r in rows:
        state = r.state
        if state == "open" and r.open_until is not None and r.now >= r.open_until:
            state = "half_open"
        _set_gauge(r.key, state)
        item: dict[str, object] = {
            "breaker": r.key,
            "model": model_of(r.key),
            "state": state,
            "failures": r.failures,
        }
        if state == "open" and r.open_until is not None:
            item["retry_in_secs"] = round((r.open_until - r.now).total_seconds(), 1)
        if state != "closed" and r.last_error:
            item["last_error"] = r.last_error[:200]
        out.append(item)
    return out
