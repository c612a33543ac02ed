"""Tests for the fake OpenAI server, driven through the real ``openai`` SDK.

The fake is only useful if the genuine client parses what it sends and raises the
same exception types a real outage would, so every check goes over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from fake_openai import FakeOpenAI, Faults, Hold, Reply
from fake_openai.plans import build_plan
from planner.agents import AGENTS
from planner.models import Plan, response_format, validate_plan

REPO_ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Summarise the quarterly report for the board."},
]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    server.reset()
    server.latency = 0.0
    yield server
    server.reset()
    server.latency = 0.0


def client(fake: FakeOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0)


async def ask(fake: FakeOpenAI, model: str = "gpt-test", **kwargs: object) -> object:
    async with client(fake) as c:
        return await c.chat.completions.create(
            model=model, messages=kwargs.pop("messages", MESSAGES), **kwargs
        )


async def test_plain_reply_is_parsed_with_usage(fake: FakeOpenAI) -> None:
    fake.script(Reply(content="hello from the fake"))
    resp = await ask(fake)
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-test"
    assert resp.choices[0].message.content == "hello from the fake"
    assert resp.choices[0].finish_reason == "stop"
    chars = sum(len(m["content"]) for m in MESSAGES)
    assert resp.usage.prompt_tokens == chars // 4
    assert resp.usage.completion_tokens == len("hello from the fake") // 4
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    [record] = fake.requests
    assert record.status == 200 and record.model == "gpt-test"
    assert record.body["messages"] == MESSAGES
    assert record.headers["authorization"] == "Bearer x"
    assert fake.successful_usage() == (chars // 4, len("hello from the fake") // 4)


async def test_default_answer_and_usage_override(fake: FakeOpenAI) -> None:
    long = "x" * 200
    resp = await ask(fake, messages=[{"role": "user", "content": long}])
    assert resp.choices[0].message.content == "fake answer: " + "x" * 80
    fake.script(Reply(content="ok", prompt_tokens=111, completion_tokens=22))
    resp = await ask(fake)
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (111, 22)
    answer_tokens = len("fake answer: " + "x" * 80) // 4
    assert fake.successful_usage() == (200 // 4 + 111, answer_tokens + 22)


async def test_tool_calls_are_parsed(fake: FakeOpenAI) -> None:
    fake.script(Reply(tool_calls=[("search", {"q": "faiss"}), ("add", {"a": 1, "b": 2})]))
    resp = await ask(fake)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert [c.id for c in calls] == ["call_1", "call_2"]
    assert [c.function.name for c in calls] == ["search", "add"]
    assert json.loads(calls[1].function.arguments) == {"a": 1, "b": 2}
    assert resp.usage.completion_tokens >= 1


async def test_plan_request_gets_a_valid_planner_plan(fake: FakeOpenAI) -> None:
    resp = await ask(fake, model="planner", response_format=response_format(8))
    plan = validate_plan(json.loads(resp.choices[0].message.content), max_steps=8)
    assert [s.agent for s in plan.steps] == list(AGENTS)[:3]
    assert [s.title.split(":")[0] for s in plan.steps] == ["Step 1", "Step 2", "Step 3"]
    assert [s.depends_on for s in plan.steps] == [[], [0], [1]]
    assert all("quarterly report" in s.instructions for s in plan.steps)
    assert fake.requests[0].body["response_format"] == response_format(8)


async def test_plan_via_sdk_parse_of_the_planner_model(fake: FakeOpenAI) -> None:
    async with client(fake) as c:
        resp = await c.chat.completions.parse(
            model="planner", messages=MESSAGES, response_format=Plan
        )
    plan = resp.choices[0].message.parsed
    assert isinstance(plan, Plan) and len(plan.steps) == 3


async def test_plan_respects_max_steps(fake: FakeOpenAI) -> None:
    resp = await ask(fake, response_format=response_format(2))
    plan = validate_plan(json.loads(resp.choices[0].message.content), max_steps=2)
    assert [s.depends_on for s in plan.steps] == [[], [0]]
    assert build_plan("x", steps=1).steps[0].depends_on == []


async def test_invalid_plan_only_when_scripted(fake: FakeOpenAI) -> None:
    bad = '{"steps": [{"title": "t", "agent": "nobody", "instructions": "i", "depends_on": []}]}'
    fake.script(Reply(content=bad))
    first = await ask(fake, response_format=response_format(8))
    assert first.choices[0].message.content == bad
    second = await ask(fake, response_format=response_format(8))
    assert len(validate_plan(json.loads(second.choices[0].message.content), max_steps=8).steps) == 3
    # Without the plan format a request mentioning plans gets the plain answer.
    third = await ask(fake, messages=[{"role": "user", "content": "Return the plan as JSON"}])
    assert third.choices[0].message.content == "fake answer: Return the plan as JSON"


async def test_model_specific_script_and_responder(fake: FakeOpenAI) -> None:
    fake.script(Reply(content="for m1"), model="m1")
    fake.script(Reply(content="shared"))
    fake.responder = lambda body: Reply(content=f"responder {body['model']}")
    assert (await ask(fake, model="m2")).choices[0].message.content == "shared"
    assert (await ask(fake, model="m1")).choices[0].message.content == "for m1"
    assert (await ask(fake, model="m1")).choices[0].message.content == "responder m1"


async def test_429_exposes_retry_after(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=429, headers={"Retry-After": "1"}))
    fake.script(Reply(status=429, headers={"retry-after-ms": "500"}))
    with pytest.raises(openai.RateLimitError) as first:
        await ask(fake)
    assert first.value.response.headers["retry-after"] == "1"
    assert first.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError) as second:
        await ask(fake)
    assert second.value.response.headers["retry-after-ms"] == "500"
    assert [r.status for r in fake.requests] == [429, 429]
    assert fake.successful_usage() == (0, 0)


async def test_500_is_internal_server_error(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=500, content="boom"))
    with pytest.raises(openai.InternalServerError) as exc:
        await ask(fake)
    assert exc.value.status_code == 500 and "boom" in str(exc.value)


async def test_drop_is_connection_error_and_server_survives(fake: FakeOpenAI) -> None:
    fake.script(Reply(drop=True))
    with pytest.raises(openai.APIConnectionError):
        await ask(fake)
    assert fake.requests[0].status is None
    assert (await ask(fake)).choices[0].message.content.startswith("fake answer: ")


async def test_malformed_body_raises(fake: FakeOpenAI) -> None:
    fake.script(Reply(malformed=True))
    with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces a raw JSON decode error
        await ask(fake)
    assert fake.requests[0].usage is None and fake.successful_usage() == (0, 0)


async def test_latency_and_delay_are_honoured(fake: FakeOpenAI) -> None:
    fake.latency = 0.3
    fake.script(Reply(content="slow", delay=0.2))
    start = time.monotonic()
    await ask(fake)
    assert time.monotonic() - start >= 0.5


async def test_held_replies_wait_for_release_and_overlap(fake: FakeOpenAI) -> None:
    """Requests wait on the server's loop, not in a queue: all 200 are held at once, and
    none is answered before the test releases them."""
    hold = Hold()
    fake.responder = lambda body: Reply(hold=hold)
    async with client(fake) as c:
        calls = [
            asyncio.create_task(c.chat.completions.create(model="m", messages=MESSAGES))
            for _ in range(200)
        ]
        await hold.reached(200)
        assert not any(call.done() for call in calls)
        assert all(r.status is None for r in fake.requests)
        hold.release()
        results = await asyncio.gather(*calls)
    assert len(results) == 200 and len(fake.requests) == 200
    assert all(r.choices[0].message.content == "fake answer: " + MESSAGES[-1]["content"] for r in results)


async def _fault_run(fake: FakeOpenAI, n: int) -> list[str]:
    outcomes = []
    async with client(fake) as c:
        for _ in range(n):
            try:
                await c.chat.completions.create(model="flaky", messages=MESSAGES)
                outcomes.append("ok")
            except openai.RateLimitError as exc:
                assert "retry-after" not in exc.response.headers
                outcomes.append("429")
            except openai.InternalServerError as exc:
                outcomes.append(str(exc.status_code))
            except openai.APIConnectionError:
                outcomes.append("drop")
    return outcomes


async def test_seeded_faults_give_expected_mix(fake: FakeOpenAI) -> None:
    faults = Faults(
        rate_429=0.2, retry_after=None, rate_500=0.2, rate_503=0.1, rate_drop=0.1, seed=7
    )
    fake.faults = faults
    first = await _fault_run(fake, 50)
    counts = Counter(first)
    assert 3 <= counts["429"] <= 20 and 3 <= counts["500"] <= 20
    assert 1 <= counts["503"] <= 12 and 1 <= counts["drop"] <= 12 and 10 <= counts["ok"] <= 35
    recorded = Counter(r.fault or "ok" for r in fake.requests)
    assert recorded == counts
    fake.reset()
    fake.faults = Faults(**{**faults.__dict__})
    assert await _fault_run(fake, 50) == first  # same seed, same sequence


async def test_faults_only_hit_listed_models(fake: FakeOpenAI) -> None:
    fake.faults = Faults(rate_500=1.0, models={"flaky"})
    assert (await ask(fake, model="steady")).choices[0].message.content
    with pytest.raises(openai.InternalServerError):
        await ask(fake, model="flaky")


async def test_models_and_healthz(fake: FakeOpenAI) -> None:
    await ask(fake, model="seen-model")
    async with httpx.AsyncClient() as http:
        health = await http.get(fake.base_url.removesuffix("/v1") + "/healthz")
        assert health.status_code == 200
    async with client(fake) as c:
        ids = [m.id async for m in c.models.list()]
    assert "seen-model" in ids


@pytest.mark.usefixtures("subprocesses")  # the system tier
def test_subprocess_mode_ready_and_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fake_openai", "--port", "0", "--latency", "0.05"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:") and line.endswith("/v1")
        base_url = line.split(" ", 1)[1]
        resp = httpx.post(
            base_url + "/chat/completions",
            json={"model": "bench", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert resp.status_code == 200
        assert resp.json()["choices"][0]["message"]["content"] == "fake answer: hi"
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""  # exactly one line on stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_client_giving_up_is_not_counted_as_sent(fake: FakeOpenAI) -> None:
    hold = Hold()
    fake.script(Reply(content="too late", hold=hold))
    async with openai.AsyncOpenAI(
        base_url=fake.base_url, api_key="x", max_retries=0, timeout=0.1
    ) as c:
        with pytest.raises(openai.APITimeoutError):
            await c.chat.completions.create(model="m", messages=MESSAGES)
    hold.release()  # the server goes on only now, after the client has given up
    async with asyncio.timeout(30):
        # The server thread sets it; there is no event of this loop to wait on.
        while fake.requests[0].responded_monotonic is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert fake.requests[0].status is None and fake.successful_usage() == (0, 0)
