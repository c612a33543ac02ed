"""LLM access: one async client per process for any OpenAI-compatible endpoint, no SDK retries
(Temporal owns retrying). Without an endpoint, `up` runs the offline provider (llm/offline.py); llm/providers.py picks."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import openai
import structlog
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion

from durable_orchestrator.llm.errors import classify
from durable_orchestrator.llm.token_estimate import estimate_prompt_tokens
from durable_orchestrator.settings import Settings

log = structlog.get_logger(__name__)

#: Receives each piece of answer text as the provider generates it.
DeltaSink = Callable[[str], Awaitable[None]]


@dataclass
class ToolCallRequest:
    id: str
    name: str
    arguments: str  # raw JSON text as the model produced it


@dataclass
class Completion:
    content: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    tool_calls: list[ToolCallRequest] = field(default_factory=list)


class LLMClient(Protocol):
    provider: str

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        on_delta: DeltaSink | None = None,
    ) -> Completion: ...

    async def close(self) -> None: ...


class OpenAIClient:
    """Any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, LiteLLM...)."""

    provider = "openai"

    def __init__(self, settings: Settings) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key or "not-needed",
            max_retries=0,
            timeout=httpx.Timeout(settings.llm_timeout_secs, connect=5.0),
            http_client=httpx.AsyncClient(
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
                timeout=httpx.Timeout(settings.llm_timeout_secs, connect=5.0),
            ),
        )
        if settings.openai_base_url:
            self.provider = httpx.URL(settings.openai_base_url).host or "openai"
        # Turned off for the rest of the process when the endpoint refuses `stream: true`.
        self._streaming = settings.llm_stream

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
        """One chat completion; streamed when `on_delta` is given and the endpoint streams."""
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        if max_tokens:
            kwargs["max_tokens"] = max_tokens
        if response_format:
            kwargs["response_format"] = response_format
        if tools:
            kwargs["tools"] = tools
        started = time.perf_counter()
        try:
            resp = await self._create(kwargs, on_delta)
        except Exception as exc:  # every provider failure becomes a classified Temporal error
            raise classify(exc) from exc
        latency_ms = int((time.perf_counter() - started) * 1000)
        if not resp.choices:
            raise classify(ValueError("provider returned no choices"))
        msg = resp.choices[0].message
        usage = resp.usage
        if usage is None:  # some servers omit usage (streamed answers especially): estimate it
            prompt_tokens = estimate_prompt_tokens(messages, tools)
            completion_tokens = max(1, len(msg.content or "") // 4)
        else:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        return Completion(
            content=msg.content,
            model=resp.model or model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=latency_ms,
            tool_calls=[
                ToolCallRequest(id=tc.id, name=tc.function.name, arguments=tc.function.arguments)
                for tc in (msg.tool_calls or [])
                if getattr(tc, "function", None) is not None
            ],
        )

    async def _create(self, kwargs: dict[str, Any], on_delta: DeltaSink | None) -> ChatCompletion:
        if on_delta is None or not self._streaming:
            return await self._client.chat.completions.create(**kwargs)
        try:
            return await self._stream(kwargs, on_delta)
        except openai.BadRequestError as exc:
            if "stream" not in str(exc).lower():
                raise
            self._streaming = False
            log.info("llm_streaming_unsupported", provider=self.provider, error=str(exc)[:200])
            return await self._client.chat.completions.create(**kwargs)

    async def _stream(self, kwargs: dict[str, Any], on_delta: DeltaSink) -> ChatCompletion:
        """Stream the answer, handing text deltas on as they come; the SDK's stream state
        assembles content and tool-call arguments into the same ChatCompletion `create` gives."""
        state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
        stream = await self._client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        async with stream:
            async for chunk in stream:
                for event in state.handle_chunk(chunk):
                    if event.type == "content.delta" and event.delta:
                        await on_delta(event.delta)
        try:
            final = state.get_final_completion()
        except AssertionError:  # no chunk at all
            raise ValueError("stream ended before any answer") from None
        if not final.choices or final.choices[0].finish_reason is None:
            # A body cut short: never keep half an answer as if it were whole.
            raise ValueError("stream ended before the answer was complete")
        return final

    async def close(self) -> None:
        await self._client.close()
