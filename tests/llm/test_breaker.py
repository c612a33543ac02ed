"""The Postgres-backed circuit breaker and rate limiter, against the real database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError

from durable_orchestrator.data.tables import CircuitBreakerState as Breaker
from durable_orchestrator.llm.breaker import CircuitBreakers, CircuitOpen, breaker_states
from durable_orchestrator.llm.limits import RATE_LIMITED, LLMRateLimiter


def gauge(model: str) -> float | None:
    return REGISTRY.get_sample_value("circuit_breaker_state", {"model": model})


async def open_time_is_up(engine: AsyncEngine, key: str) -> None:
    """Move the breaker's open_until into the past: its open time is over without the test
    waiting for a wall-clock window (which flakes on a loaded machine)."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(Breaker)
            .where(Breaker.key == key)
            .values(open_until=sa.func.now() - sa.text("interval '1 second'"))
        )


async def test_breaker_opens_after_threshold_then_probe_closes_it(engine) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    key = f"prov:{model}"
    cb = CircuitBreakers(engine, threshold=3, open_secs=600)
    other_worker = CircuitBreakers(engine, threshold=3, open_secs=600)  # shares the row

    for i in range(3):
        permit = await cb.acquire(key)
        opened = await cb.failure(permit, "HTTP 500")
        assert opened is (i == 2)
    assert gauge(model) == 1

    with pytest.raises(CircuitOpen) as err:
        await other_worker.acquire(key)
    assert timedelta(seconds=590) < err.value.retry_in <= timedelta(seconds=600)
    assert [s["state"] for s in await breaker_states(engine) if s["model"] == model] == ["open"]

    await open_time_is_up(engine, key)
    probe = await other_worker.acquire(key)
    assert probe.probe is True and gauge(model) == 2
    with pytest.raises(CircuitOpen) as second:  # only one probe at a time
        await cb.acquire(key)
    assert second.value.state == "half_open"

    await other_worker.success(probe)
    assert gauge(model) == 0
    assert (await cb.acquire(key)).probe is False


async def test_failed_probe_reopens_and_a_success_resets_the_count(engine) -> None:
    key = f"prov:m-{uuid.uuid4().hex[:6]}"
    cb = CircuitBreakers(engine, threshold=2, open_secs=600)
    await cb.failure(await cb.acquire(key), "timeout")
    await cb.success(await cb.acquire(key))  # not consecutive any more
    assert await cb.failure(await cb.acquire(key), "timeout") is False
    assert await cb.failure(await cb.acquire(key), "timeout") is True
    with pytest.raises(CircuitOpen):
        await cb.acquire(key)
    await open_time_is_up(engine, key)
    probe = await cb.acquire(key)
    assert probe.probe
    assert await cb.failure(probe, "still down") is True
    with pytest.raises(CircuitOpen) as reopened:  # for a whole open time again
        await cb.acquire(key)
    assert reopened.value.retry_in > timedelta(seconds=590)
    await open_time_is_up(engine, key)
    probe = await cb.acquire(key)
    await cb.release(probe)  # cancelled probe: the next caller may probe at once
    assert (await cb.acquire(key)).probe


async def test_concurrent_failures_from_many_workers_are_all_counted(engine) -> None:
    key = f"prov:m-{uuid.uuid4().hex[:6]}"
    workers = [CircuitBreakers(engine, threshold=5, open_secs=30) for _ in range(4)]
    permits = [await w.acquire(key) for w in workers for _ in range(3)]
    results = await asyncio.gather(
        *(workers[i % 4].failure(p, "boom") for i, p in enumerate(permits))
    )
    # The row lock serialises them: no lost update, and exactly the 5th..12th see it open.
    assert results.count(True) == 8
    states = {s["breaker"]: s for s in await breaker_states(engine)}
    assert states[key]["state"] == "open"
    # The 6th..12th were admitted before it opened: their verdicts are about the old state.
    assert states[key]["failures"] == 5


async def test_a_call_admitted_while_closed_cannot_close_an_open_breaker(engine) -> None:
    key = f"prov:m-{uuid.uuid4().hex[:6]}"
    cb = CircuitBreakers(engine, threshold=2, open_secs=30)
    slow = await cb.acquire(key)  # admitted while closed, answers late
    await cb.failure(await cb.acquire(key), "500")
    slow_but_seen_failure = await cb.acquire(key)
    assert await cb.failure(await cb.acquire(key), "500") is True
    await cb.success(slow)
    await cb.success(slow_but_seen_failure)  # saw a failure, so it takes the lock: still stale
    with pytest.raises(CircuitOpen) as err:
        await cb.acquire(key)
    assert err.value.state == "open"


async def test_a_late_failure_does_not_count_against_a_breaker_a_probe_closed(engine) -> None:
    key = f"prov:m-{uuid.uuid4().hex[:6]}"
    cb = CircuitBreakers(engine, threshold=2, open_secs=0.2)
    before = [await cb.acquire(key) for _ in range(3)]
    await cb.failure(before[0], "500")
    assert await cb.failure(before[1], "500") is True
    await asyncio.sleep(0.3)
    probe = await cb.acquire(key)
    assert probe.probe
    await cb.success(probe)
    assert await cb.failure(before[2], "500 from before the outage ended") is False
    assert [s["failures"] for s in await breaker_states(engine) if s["breaker"] == key] == [0]
    late_probe_verdict = probe  # a probe answering twice (a retry) is stale as well
    await cb.failure(await cb.acquire(key), "500")
    await cb.success(late_probe_verdict)
    assert [s["failures"] for s in await breaker_states(engine) if s["breaker"] == key] == [1]


async def test_rate_limiter_shares_rpm_and_returns_next_retry_delay(engine) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    a = LLMRateLimiter(engine, rpm=3, tpm=None, max_wait_secs=0)
    b = LLMRateLimiter(engine, rpm=3, tpm=None, max_wait_secs=0)
    for lim in (a, b, a):
        await lim.acquire(model, 10)
    with pytest.raises(ApplicationError) as err:
        await b.acquire(model, 10)
    assert err.value.type == RATE_LIMITED
    assert not err.value.non_retryable
    # One request per 20 s refills; the delay says so instead of hammering the provider.
    assert timedelta(seconds=15) <= err.value.next_retry_delay <= timedelta(seconds=21)


async def test_rate_limiter_tpm_waits_inside_the_activity_when_short(engine) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    lim = LLMRateLimiter(engine, rpm=None, tpm=600, max_wait_secs=5)  # 10 tokens/s
    await lim.acquire(model, 600)
    await lim.settle(model, 600, 600)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await lim.acquire(model, 5)  # ~0.5 s of refill: waits instead of failing
    assert loop.time() - started >= 0.3


async def test_redis_rate_limiter_shares_rpm_and_tpm(engine, redis_url) -> None:
    from durable_orchestrator.llm.limits import RedisRateLimiter, make_rate_limiter

    # The Redis is shared (CI's, a developer's): model names unique to this run.
    rpm_model, tpm_model = f"m-{uuid.uuid4().hex[:6]}", f"t-{uuid.uuid4().hex[:6]}"
    a = make_rate_limiter(engine, redis_url=redis_url, rpm=3, tpm=1000, max_wait_secs=0)
    b = RedisRateLimiter(redis_url, rpm=3, tpm=1000, max_wait_secs=0)
    assert isinstance(a, RedisRateLimiter)
    for lim in (a, b, a):
        await lim.acquire(rpm_model, 10)
    with pytest.raises(ApplicationError) as err:
        await b.acquire(rpm_model, 10)
    assert err.value.type == RATE_LIMITED
    assert timedelta(seconds=50) <= err.value.next_retry_delay <= timedelta(seconds=61)

    await a.acquire(tpm_model, 900)
    await a.settle(tpm_model, 900, 995)  # the answer used more than reserved
    with pytest.raises(ApplicationError):
        await b.acquire(tpm_model, 10)


async def test_rate_bucket_never_gives_out_more_than_the_cap_under_contention(engine) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    workers = [LLMRateLimiter(engine, rpm=10, tpm=None, max_wait_secs=0) for _ in range(4)]

    async def one(i: int) -> bool:
        try:
            await workers[i % 4].acquire(model, 1)
            return True
        except ApplicationError:
            return False

    results = await asyncio.gather(*(one(i) for i in range(25)))
    assert results.count(True) == 10
