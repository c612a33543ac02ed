"""LLM access: one async client per process for any OpenAI-compatible endpoint, no SDK retries
(Temporal owns retrying). Without an endpoint, `up` runs the offline provider (llm/offline.py); llm/providers.py picks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import openai

from durable_orchestrator.llm.errors import classify
from durable_orchestrator.settings import Settings


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

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Completion:
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        if max_tokens:
            kwargs["max_tokens"] = max_tokens
        if response_format:
            kwargs["response_format"] = response_format
        if tools:
            kwargs["tools"] = tools
        started = time.perf_counter()
        try:
            resp = await self._client.chat.completions.create(**kwargs)
        except Exception as exc:  # every provider failure becomes a classified Temporal error
            raise classify(exc) from exc
        latency_ms = int((time.perf_counter() - started) * 1000)
        if not resp.choices:
            raise classify(ValueError("provider returned no choices"))
        msg = resp.choices[0].message
        usage = resp.usage
        return Completion(
            content=msg.content,
            model=resp.model or model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
            tool_calls=[
                ToolCallRequest(id=tc.id, name=tc.function.name, arguments=tc.function.arguments)
                for tc in (msg.tool_calls or [])
                if getattr(tc, "function", None) is not None
            ],
        )

    async def close(self) -> None:
        await self._client.close()
