"""The storage every API rate limit counts in: Redis when REDIS_URL is set (one budget shared
by every API replica), process memory otherwise. Kept apart from `api/rate_limits.py` so the
authentication dependency can count failed attempts without importing the routes' limits."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from durable_orchestrator.settings import Settings


@dataclass
class RateLimits:
    """One per app: the storage and the limiter over it."""

    storage: Storage
    limiter: MovingWindowRateLimiter
    backend: str

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        if settings.redis_url:
            uri = (
                "async+" + settings.redis_url
                if not settings.redis_url.startswith("async+")
                else settings.redis_url
            )
            storage: Storage = storage_from_string(uri, implementation="redispy")
            backend = "redis"
        else:
            storage, backend = MemoryStorage(), "memory"
        return cls(storage=storage, limiter=MovingWindowRateLimiter(storage), backend=backend)


def get_rate_limits(app: FastAPI) -> RateLimits:
    limits = getattr(app.state, "rate_limits", None)
    if limits is None:
        limits = app.state.rate_limits = RateLimits.from_settings(app.state.settings)
    return limits
