"""Authenticated API keys remembered for a few seconds, so a client's burst of requests costs
one key lookup instead of one per request.

Only successful lookups are kept (an unknown key always reaches the database, so a key created
a moment ago works at once), for at most `ttl` seconds: a revoked or expired key stops working
within `ttl` in every process, with no invalidation message to lose."""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.auth.api_keys import Principal, authenticate, hash_key

MAX_KEYS = 10_000


class KeyCache:
    def __init__(self, ttl: float, *, timer: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._cache: TTLCache[str, Principal] | None = (
            TTLCache(MAX_KEYS, ttl, timer) if ttl > 0 else None
        )

    async def authenticate(self, engine: AsyncEngine, key: str) -> Principal | None:
        if self._cache is None:
            return await authenticate(engine, key)
        digest = hash_key(key)
        principal = self._cache.get(digest)
        if principal is None:
            principal = await authenticate(engine, key)
            if principal is not None:
                self._cache[digest] = principal
        return principal
