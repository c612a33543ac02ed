"""LLM access: one async client per process, no SDK retries (Temporal owns retrying), and an
offline provider so a newcomer sees the whole flow without any key."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import openai

from core.llm_errors import classify
from core.settings import Settings


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


class OfflineClient:
    """Deterministic stand-in used by `orchestrator up` when no endpoint is configured.

    Every answer says plainly that it comes from the offline model, so nobody mistakes it
    for a real one. Plans follow a fixed research → analyse → write template."""

    provider = "offline"

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Completion:
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
        if response_format is not None:
            content = json.dumps(
                {
                    "steps": [
                        {"title": "Research the question", "agent": "researcher",
                         "instructions": "Collect the facts the task needs.", "depends_on": []},
                        {"title": "Analyse the findings", "agent": "analyst",
                         "instructions": "Work out what the facts imply.", "depends_on": [0]},
                        {"title": "Write the answer", "agent": "writer",
                         "instructions": "Write the final answer for the user.", "depends_on": [1]},
                    ]
                }
            )
        else:
            digest = hashlib.sha256(str(last_user).encode()).hexdigest()[:8]
            content = f"offline model: no LLM endpoint is configured (answer {digest}). " \
                f"Set OPENAI_BASE_URL/OPENAI_API_KEY for real answers."
        return Completion(
            content=content,
            model="offline",
            prompt_tokens=max(1, prompt_chars // 4),
            completion_tokens=max(1, len(content) // 4),
            latency_ms=0,
        )

    async def close(self) -> None:
        return None


def make_llm_client(settings: Settings) -> LLMClient:
    return OfflineClient() if settings.use_offline_llm else OpenAIClient(settings)
