"""The offline provider: what `orchestrator up` answers with when no LLM endpoint is configured,
so a newcomer sees the whole flow without a key. Every answer says it is offline."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from durable_orchestrator.llm.client import Completion, DeltaSink
from durable_orchestrator.llm.token_estimate import estimate_prompt_tokens


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
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
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
        if on_delta is not None and response_format is None:
            await on_delta(content)
        return Completion(
            content=content,
            model="offline",
            prompt_tokens=estimate_prompt_tokens(messages, tools),
            completion_tokens=max(1, len(content) // 4),
            latency_ms=0,
        )

    async def close(self) -> None:
        return None
