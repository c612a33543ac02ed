"""Rate limits with the `limits` library: moving windows, kept in Redis when REDIS_URL is set
(one budget shared by every API replica) and in process memory otherwise.

    from api.rate_limits import rate_limited
    @router.post("/search", dependencies=[rate_limited("memory_search", "memory_search_rate_limit", per="user")])

Every limited response carries X-RateLimit-Limit / -Remaining / -Reset (Reset = Unix time in
seconds when the window frees a slot); an excess request gets 429 plus Retry-After (seconds)."""

from __future__ import annotations

import math
import time
from typing import Literal

import structlog
from fastapi import Depends, Request
from limits import RateLimitItem, parse

from api.deps import CurrentUser
from api.errors import APIError
from api.rate_store import RateLimits, get_rate_limits
from durable_orchestrator.settings import Settings

log = structlog.get_logger(__name__)

__all__ = ["RateLimits", "get_rate_limits", "rate_limited"]


def _item(settings: Settings, setting: str) -> RateLimitItem:
    value = getattr(settings, setting)
    try:
        return parse(value)
    except ValueError as exc:
        raise RuntimeError(f"{setting.upper()}={value!r} is not a rate limit like '60/minute'") from exc


def rate_limited(name: str, setting: str, *, per: Literal["key", "user"] = "key"):  # type: ignore[no-untyped-def]
    """A dependency that counts one hit against `Settings.<setting>` (e.g. "60/minute") for the
    caller's key (per="key"; a JWT counts as its own key) or for the caller's user across all
    their keys (per="user"). `name` keeps budgets of different endpoints apart."""

    async def _limit(request: Request, principal: CurrentUser) -> None:
        settings: Settings = request.app.state.settings
        item = _item(settings, setting)
        rl = get_rate_limits(request.app)
        who = principal.key_id if per == "key" else principal.user_id
        ident = (name, per, who)
        try:
            allowed = await rl.limiter.hit(item, *ident)
            stats = await rl.limiter.get_window_stats(item, *ident)
        except Exception as exc:
            # Storage (Redis) down: serve the request unlimited rather than fail every call;
            # the log line and missing X-RateLimit-* headers make the outage visible.
            log.warning("rate_limit_storage_unavailable", backend=rl.backend, error=type(exc).__name__)
            return
        reset = max(stats.reset_time, time.time())
        headers = {
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": str(max(0, stats.remaining)),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }
        # The request-context middleware adds these to whatever response this request gets.
        request.state.response_headers = {**getattr(request.state, "response_headers", {}), **headers}
        if not allowed:
            retry_after = max(1, math.ceil(reset - time.time()))
            log.info("rate_limited", limit=name, per=per)
            raise APIError(
                429, "rate_limited",
                f"rate limit {item.amount} per {item.multiples} {item.GRANULARITY.name} exceeded; "
                f"retry in {retry_after}s",
                {"limit": name, "retry_after": retry_after},
                headers={**headers, "Retry-After": str(retry_after)},
            )

    return Depends(_limit)
