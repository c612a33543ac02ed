"""The LLM router (breakers + fallback) over the real OpenAI client, the fake server and Postgres."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio.exceptions import ApplicationError

from durable_orchestrator.llm.client import OpenAIClient
from durable_orchestrator.llm.router import CIRCUIT_OPEN, LLMRouter
from fake_openai import Faults, Reply

MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def router_factory(base_settings, engine, fake_llm):  # type: ignore[no-untyped-def]
    made: list[LLMRouter] = []

    def make(**overrides) -> LLMRouter:  # type: ignore[no-untyped-def]
        settings = base_settings.model_copy(update=overrides)
        router = LLMRouter.from_settings(OpenAIClient(settings), engine, settings)
        made.append(router)
        return router

    yield make
    for r in made:
        await r.close()


async def test_open_breaker_past_the_wait_allowance_fails_with_time_to_half_open(
    router_factory, fake_llm
) -> None:
    model = f"solo-{uuid.uuid4().hex[:6]}"
    router = router_factory(
        circuit_breaker_threshold=2, circuit_breaker_timeout_secs=20, llm_wait_max_secs=5
    )
    fake_llm.faults = Faults(rate_503=1.0)
    for _ in range(2):
        with pytest.raises(ApplicationError) as err:
            await router.complete(model=model, messages=MSGS)
        assert err.value.type == "LLMHTTP503"
    with pytest.raises(ApplicationError) as err:
        await router.complete(model=model, messages=MSGS)
    assert err.value.type == CIRCUIT_OPEN and not err.value.non_retryable
    assert timedelta(seconds=15) < err.value.next_retry_delay <= timedelta(seconds=20)
    assert len(fake_llm.requests) == 2  # the third call never left the worker


async def test_non_retryable_errors_do_not_trip_the_breaker(router_factory, fake_llm) -> None:
    model = f"bad-{uuid.uuid4().hex[:6]}"
    router = router_factory(circuit_breaker_threshold=1, model_fallbacks=["other"])
    fake_llm.script(Reply(status=400, content="bad request"), Reply(status=400), model=model)
    for _ in range(2):
        with pytest.raises(ApplicationError) as err:
            await router.complete(model=model, messages=MSGS)
        assert err.value.non_retryable
    assert [r.model for r in fake_llm.requests] == [model, model]  # no fallback for a 400


async def test_cancelled_probe_frees_the_half_open_slot(router_factory, fake_llm, engine) -> None:
    model = f"probe-{uuid.uuid4().hex[:6]}"
    router = router_factory(circuit_breaker_threshold=1, circuit_breaker_timeout_secs=0.2)
    fake_llm.script(Reply(status=500), Reply(delay=30), model=model)
    with pytest.raises(ApplicationError):
        await router.complete(model=model, messages=MSGS)  # opens
    await asyncio.sleep(0.3)
    probe = asyncio.create_task(router.complete(model=model, messages=MSGS))
    for _ in range(500):  # until the probe's request is at the server (bounded: 10 s)
        if len(fake_llm.requests) >= 2:
            break
        await asyncio.sleep(0.02)
    assert len(fake_llm.requests) == 2
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    answer = await router.complete(model=model, messages=MSGS)  # the next caller probes, closes
    assert answer.model == model


async def test_open_breaker_without_fallback_waits_for_the_probe_instead_of_failing(
    router_factory, fake_llm
) -> None:
    model = f"wait-{uuid.uuid4().hex[:6]}"
    router = router_factory(circuit_breaker_threshold=1, circuit_breaker_timeout_secs=0.5)
    fake_llm.script(Reply(status=503), Reply(content="back again"), model=model)
    with pytest.raises(ApplicationError):
        await router.complete(model=model, messages=MSGS)  # opens the breaker
    answer = await router.complete(model=model, messages=MSGS)  # waits, then is the probe
    assert answer.content == "back again"
    assert len(fake_llm.requests) == 2  # the waiting call did not knock while it was open
