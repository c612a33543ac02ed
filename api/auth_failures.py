"""Failed authentication attempts, limited per client address before any database work.

Without this, anyone can make the API look up keys (and write an audit row) as fast as they
can send requests. Each address gets `ORCH_AUTH_FAILURE_RATE_LIMIT` failed attempts per
window; past that, requests from it that carry credentials the server has not yet accepted are
answered 429 straight away — no key lookup, no token check, no audit row — until the window
moves. Valid credentials cost one counter read per request (memory, or Redis when set).
"""

from __future__ import annotations

import math
import time

import structlog
from fastapi import Request
from limits import RateLimitItem, parse

from api.errors import APIError
from api.rate_store import get_rate_limits

log = structlog.get_logger(__name__)

_NAME = "auth_failures"


def client_address(request: Request) -> str:
    """The peer address (behind a proxy, uvicorn's --proxy-headers makes it the client's)."""
    return request.client.host if request.client else "unknown"


def _item(request: Request) -> RateLimitItem:
    value = request.app.state.settings.auth_failure_rate_limit
    try:
        return parse(value)
    except ValueError as exc:
        raise RuntimeError(
            f"ORCH_AUTH_FAILURE_RATE_LIMIT={value!r} is not a rate limit like '20/minute'"
        ) from exc


def _refusal(item: RateLimitItem, reset: float) -> APIError:
    retry_after = max(1, math.ceil(reset - time.time()))
    return APIError(
        429,
        "rate_limited",
        f"too many failed authentication attempts from this address (ORCH_AUTH_FAILURE_RATE_LIMIT="
        f"{item.amount} per {item.multiples} {item.GRANULARITY.name}); retry in {retry_after}s",
        {"limit": _NAME, "retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


async def refuse_if_exhausted(request: Request) -> None:
    """429 when this address has no failed attempt left in the window (checked first)."""
    item = _item(request)
    rl = get_rate_limits(request.app)
    address = client_address(request)
    try:
        if await rl.limiter.test(item, _NAME, address):
            return
        stats = await rl.limiter.get_window_stats(item, _NAME, address)
    except Exception as exc:  # storage down: authenticate as usual rather than refuse everyone
        log.warning("rate_limit_storage_unavailable", backend=rl.backend, error=type(exc).__name__)
        return
    log.info("auth_failures_limited", client=address)
    raise _refusal(item, stats.reset_time)


async def count_failure(request: Request) -> APIError | None:
    """Count one failed attempt; the 429 to answer when it was over the limit (then nothing is
    audited), else None."""
    item = _item(request)
    rl = get_rate_limits(request.app)
    address = client_address(request)
    try:
        if await rl.limiter.hit(item, _NAME, address):
            return None
        stats = await rl.limiter.get_window_stats(item, _NAME, address)
    except Exception as exc:
        log.warning("rate_limit_storage_unavailable", backend=rl.backend, error=type(exc).__name__)
        return None
    return _refusal(item, stats.reset_time)
