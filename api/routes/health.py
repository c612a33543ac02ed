"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api import readiness
from durable_orchestrator.data.engine import ping
from durable_orchestrator.llm.breaker import breaker_states

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Process is alive (no dependencies checked)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Dependencies reachable and a worker is polling")
async def readyz(request: Request) -> JSONResponse:
    """200 `{"status": "ok", "checks": {...}}` or 503 `{"status": "unhealthy", "failed": [...],
    "checks": {...}}`. Checks: postgres, temporal, worker (a poller on the task queue seen
    recently), and, breakers (circuit breaker states: reported, never failing readiness) and, when loaded,
    embedding_model."""
    state = request.app.state
    settings = state.settings
    checks: dict[str, dict[str, object]] = {}

    async def check(name: str, coro: Awaitable[dict[str, Any] | None]) -> None:
        try:
            detail = await asyncio.wait_for(coro, timeout=2.0)
            checks[name] = {"ok": True, **(detail or {})}
        except Exception as exc:
            msg = str(exc) if isinstance(exc, readiness.NotReady) else f"{type(exc).__name__}: {exc}"
            checks[name] = {"ok": False, "error": msg[:300]}

    async def temporal() -> None:
        await state.temporal.service_client.check_health()

    async def worker() -> dict[str, Any]:
        return await readiness.worker_check(
            state.temporal, settings.temporal_namespace, settings.task_queue,
            settings.readyz_poller_max_age_secs,
        )

    async def sync(fn: Any, arg: Any) -> dict[str, Any]:
        return fn(arg)

    async def breakers() -> dict[str, Any]:
        # Informational: an open breaker degrades one model, not the service (fallbacks,
        # Temporal retries), so it never makes readiness fail on its own.
        states = await breaker_states(state.engine)
        return {"open": sum(s["state"] != "closed" for s in states), "breakers": states}

    jobs = [
        check("postgres", ping(state.engine)), check("temporal", temporal()), check("worker", worker()),
        check("breakers", breakers()),
    ]
    if getattr(state, "embedder", None) is not None:
        jobs.append(check("embedding_model", sync(readiness.embedder_check, state.embedder)))
    await asyncio.gather(*jobs)
    failed = sorted(name for name, c in checks.items() if not c["ok"] and name != "breakers")
    body: dict[str, Any] = {"status": "unhealthy" if failed else "ok", "checks": checks}
    if failed:
        body["failed"] = failed
    return JSONResponse(body, status_code=503 if failed else 200)
