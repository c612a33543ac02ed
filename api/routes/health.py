"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api import readiness
from api.deps import MaybeUser
from api.errors import ERROR_RESPONSES
from durable_orchestrator.data.engine import ping
from durable_orchestrator.llm.breaker import breaker_states

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    """Anonymous callers (and keys without the `admin` scope) get `status` only."""

    status: str = Field(description="`ok` or `unhealthy`.", examples=["ok"])
    failed: list[str] | None = Field(None, description="Admin only: the checks that failed.")
    checks: dict[str, dict[str, Any]] | None = Field(
        None, description="Admin only: every check with its details (hosts, breakers, errors)."
    )


@router.get("/healthz", summary="Process is alive (no dependencies checked)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Dependencies reachable and a worker is polling",
    response_model=Readiness,
    response_model_exclude_none=True,
    responses={
        503: {"model": Readiness, "description": "A dependency is down or no worker polls"},
        401: ERROR_RESPONSES[401],
        429: ERROR_RESPONSES[429],
    },
    # Credentials are optional here (`{}`: anonymous callers get the status).
    openapi_extra={"security": [{}, {"APIKeyHeader": []}, {"HTTPBearer": []}]},
)
async def readyz(request: Request, principal: MaybeUser) -> JSONResponse:
    """200 `{"status": "ok"}` or 503 `{"status": "unhealthy"}`. With credentials carrying the
    `admin` scope, also `checks` (postgres, temporal, worker: a poller on the task queue seen
    recently, breakers: circuit breaker states, reported but never failing readiness, and,
    when loaded, embedding_model) and `failed`. Checks run at most once per
    `ORCH_READYZ_CACHE_SECS` per process, however many callers ask."""
    admin = principal is not None and principal.has("admin")
    body = await _cached_checks(request)
    status = 503 if body["status"] != "ok" else 200
    return JSONResponse(body if admin else {"status": body["status"]}, status_code=status)


class _ReadinessCache:
    """The last result and when it was taken; one refresh at a time, callers in the meantime
    wait for it rather than each starting their own round of RPCs."""

    def __init__(self) -> None:
        self.at = float("-inf")
        self.body: dict[str, Any] = {}
        self.lock = asyncio.Lock()


async def _cached_checks(request: Request) -> dict[str, Any]:
    state = request.app.state
    ttl = state.settings.readyz_cache_secs
    cache = getattr(state, "readyz_cache", None)
    if cache is None:
        cache = state.readyz_cache = _ReadinessCache()
    if time.monotonic() - cache.at < ttl:
        return cache.body
    async with cache.lock:
        if time.monotonic() - cache.at < ttl:
            return cache.body
        cache.body = await _run_checks(request)
        cache.at = time.monotonic()
        return cache.body


async def _run_checks(request: Request) -> dict[str, Any]:
    state = request.app.state
    settings = state.settings
    checks: dict[str, dict[str, object]] = {}

    async def check(name: str, coro: Awaitable[dict[str, Any] | None]) -> None:
        try:
            detail = await asyncio.wait_for(coro, timeout=2.0)
            checks[name] = {"ok": True, **(detail or {})}
        except Exception as exc:
            msg = (
                str(exc) if isinstance(exc, readiness.NotReady) else f"{type(exc).__name__}: {exc}"
            )
            checks[name] = {"ok": False, "error": msg[:300]}

    async def temporal() -> None:
        await state.temporal.service_client.check_health()

    async def worker() -> dict[str, Any]:
        return await readiness.worker_check(
            state.temporal,
            settings.temporal_namespace,
            settings.task_queue,
            settings.readyz_poller_max_age_secs,
        )

    async def sync(fn: Any, arg: Any) -> dict[str, Any]:
        return fn(arg)

    async def breakers() -> dict[str, Any]:
        # Informational: an open breaker degrades one model, not the service (fallbacks,
        # waits, Temporal retries), so it never makes readiness fail on its own.
        states = await breaker_states(state.engine)
        return {"open": sum(s["state"] != "closed" for s in states), "breakers": states}

    jobs = [
        check("postgres", ping(state.engine)),
        check("temporal", temporal()),
        check("worker", worker()),
        check("breakers", breakers()),
    ]
    if getattr(state, "embedder", None) is not None:
        jobs.append(check("embedding_model", sync(readiness.embedder_check, state.embedder)))
    await asyncio.gather(*jobs)
    failed = sorted(name for name, c in checks.items() if not c["ok"] and name != "breakers")
    body: dict[str, Any] = {"status": "unhealthy" if failed else "ok", "checks": checks}
    if failed:
        body["failed"] = failed
    return body
