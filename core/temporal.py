"""Temporal client construction, shared by the API, the worker and the CLI."""

from __future__ import annotations

from temporalio.client import Client

from core.settings import Settings


def temporal_address(settings: Settings) -> str:
    if not settings.temporal_address:
        raise RuntimeError(
            "TEMPORAL_ADDRESS is not set; run `orchestrator up` (embedded dev server) or point "
            "TEMPORAL_ADDRESS at a Temporal frontend"
        )
    return settings.temporal_address


async def connect(settings: Settings) -> Client:
    return await Client.connect(temporal_address(settings), namespace=settings.temporal_namespace)
