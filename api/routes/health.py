"""Liveness and readiness."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from core.circuit_breaker import breaker_states

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Process is alive (no dependencies checked)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Dependencies reachable and a worker is polling")
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, dict[str, object]] = {}

    async def check(name: str, coro) -> None:  # type: ignore[no-untyped-def]
        try:
            detail = await asyncio.wait_for(coro, timeout=2.0)
            checks[name] = {"ok": True, **(detail or {})}
        except Exception as exc:
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}

    async def postgres() -> None:
        async with request.app.state.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def temporal() -> None:
        await request.app.state.temporal.service_client.check_health()

    async def breakers() -> dict[str, object]:
        # Informational: an open breaker degrades one model, not the service (fallbacks,
        # Temporal retries), so it never makes readiness fail on its own.
        states = await breaker_states(request.app.state.engine)
        return {"open": sum(s["state"] != "closed" for s in states), "breakers": states}

    await asyncio.gather(
        check("postgres", postgres()), check("temporal", temporal()), check("breakers", breakers())
    )
    ok = all(c["ok"] for name, c in checks.items() if name != "breakers")
    return JSONResponse(
        {"status": "ok" if ok else "unhealthy", "checks": checks}, status_code=200 if ok else 503
    )
