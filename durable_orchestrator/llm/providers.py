"""Which LLM client a process uses: the configured OpenAI-compatible endpoint, or the offline
provider when none is configured (`ORCH_OFFLINE_LLM` forces either)."""

from __future__ import annotations

from durable_orchestrator.llm.client import LLMClient, OpenAIClient
from durable_orchestrator.llm.offline import OfflineClient
from durable_orchestrator.settings import Settings


def make_llm_client(settings: Settings) -> LLMClient:
    return OfflineClient() if settings.use_offline_llm else OpenAIClient(settings)
