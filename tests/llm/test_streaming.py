"""Streamed answers over the real openai SDK against the fake server: text arrives in pieces,
tool-call arguments are assembled from fragments, a broken stream is a retryable failure and
never half an answer, and an endpoint without streaming gets whole answers."""

from __future__ import annotations

import json

import pytest
from temporalio.exceptions import ApplicationError

from durable_orchestrator.llm.client import OpenAIClient
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI, Reply

MSGS = [{"role": "user", "content": "hello"}]
TOOLS = [{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]


@pytest.fixture
async def client(fake_llm: FakeOpenAI):  # type: ignore[no-untyped-def]
    c = OpenAIClient(Settings(openai_base_url=fake_llm.base_url, openai_api_key="k", llm_timeout_secs=2))
    yield c
    await c.close()


class Pieces(list[str]):
    async def __call__(self, text: str) -> None:
        self.append(text)


async def test_text_arrives_in_pieces_that_add_up_to_the_answer(client: OpenAIClient, fake_llm: FakeOpenAI) -> None:
    answer = "Green tea is steamed; black tea is oxidised before it is dried."
    fake_llm.script(Reply(content=answer, prompt_tokens=11, completion_tokens=13))
    pieces = Pieces()
    done = await client.complete(model="gpt-4o-mini", messages=MSGS, on_delta=pieces)
    assert len(pieces) == len(answer.split())
    assert "".join(pieces) == answer == done.content
    assert (done.prompt_tokens, done.completion_tokens) == (11, 13)  # from the usage chunk
    request = fake_llm.requests[-1]
    assert request.streamed and request.body is not None
    assert request.body["stream_options"] == {"include_usage": True}


async def test_tool_call_arguments_are_assembled_before_use(client: OpenAIClient, fake_llm: FakeOpenAI) -> None:
    args = {"expression": "(12 + 30) * 1000 / 7", "note": "x" * 100}
    fake_llm.script(Reply(tool_calls=[("calculator", args), ("current_time", {})]))
    pieces = Pieces()
    done = await client.complete(model="gpt-4o-mini", messages=MSGS, tools=TOOLS, on_delta=pieces)
    assert [(c.name, json.loads(c.arguments)) for c in done.tool_calls] == [("calculator", args), ("current_time", {})]
    assert all(c.id.startswith("call_") for c in done.tool_calls)
    assert pieces == []  # tool-call fragments are not answer text


@pytest.mark.parametrize("how", ["drop", "truncate", "stall"])
async def test_a_broken_stream_is_a_retryable_failure(client: OpenAIClient, fake_llm: FakeOpenAI, how: str) -> None:
    fake_llm.script(Reply(content="one two three four five six seven eight", stream_break=how))
    pieces = Pieces()
    with pytest.raises(ApplicationError) as caught:
        await client.complete(model="gpt-4o-mini", messages=MSGS, on_delta=pieces)
    assert caught.value.non_retryable is False
    assert caught.value.type in {"LLMConnectionError", "LLMMalformedResponse", "LLMTimeout"}
    assert 0 < len(pieces) < 8  # part of the text was streamed, and then it broke
    # The next call (Temporal's retry) streams the whole answer.
    fake_llm.script(Reply(content="all of it"))
    assert (await client.complete(model="gpt-4o-mini", messages=MSGS, on_delta=pieces)).content == "all of it"


async def test_an_endpoint_without_streaming_gets_whole_answers(client: OpenAIClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.supports_streaming = False
    try:
        fake_llm.script(Reply(content="first"), Reply(content="second"))
        pieces = Pieces()
        assert (await client.complete(model="gpt-4o-mini", messages=MSGS, on_delta=pieces)).content == "first"
        assert (await client.complete(model="gpt-4o-mini", messages=MSGS, on_delta=pieces)).content == "second"
    finally:
        fake_llm.supports_streaming = True
    assert pieces == []
    # One refused streamed request, then plain ones only: the client remembers.
    assert [bool((r.body or {}).get("stream")) for r in fake_llm.requests] == [True, False, False]


async def test_without_a_sink_nothing_is_streamed(client: OpenAIClient, fake_llm: FakeOpenAI) -> None:
    fake_llm.script(Reply(content="plain"))
    assert (await client.complete(model="gpt-4o-mini", messages=MSGS)).content == "plain"
    assert not fake_llm.requests[-1].streamed
