"""/readyz: 503 naming the worker check when no worker polls the queue, 200 when one is back.

A stopped worker stays in DescribeTaskQueue's poller list for minutes; the signal is the age of
its last poll. Production keeps the 60 s default (an idle worker re-polls every ≈ 55 s); this test
uses 3 s so it stays short, and restarts the worker, whose fresh poll is well inside 3 s."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import httpx
from temporalio.client import Client

from api import readiness
from api.app import create_app
from durable_orchestrator.auth.api_keys import create_key
from durable_orchestrator.settings import Settings
from worker import build_worker


async def _wait_status(
    http: httpx.AsyncClient, code: int, within: float = 30, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        resp = await http.get("/readyz", headers=headers)
        if resp.status_code == code:
            return resp.json()
        assert time.monotonic() < deadline, f"/readyz still {resp.status_code}: {resp.text}"
        await asyncio.sleep(0.3)


async def test_readyz_follows_the_worker(base_settings: Settings, temporal_client: Client) -> None:
    settings = base_settings.model_copy(
        update={"task_queue": f"tq-{uuid.uuid4().hex[:8]}", "readyz_poller_max_age_secs": 3.0}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        admin_key, _ = await create_key(
            app.state.engine, f"ops-{uuid.uuid4().hex[:6]}", scopes=("admin",)
        )
        admin = {"X-API-Key": admin_key}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=admin
        ) as http:
            body = (await http.get("/readyz")).json()
            assert body["status"] == "unhealthy" and body["failed"] == ["worker"], body
            assert body["checks"]["postgres"]["ok"] and body["checks"]["temporal"]["ok"]

            for _ in range(2):  # up → ready, down → unhealthy, twice
                async with build_worker(settings, temporal_client) as worker:
                    run = asyncio.create_task(worker.run())
                    try:
                        body = await _wait_status(http, 200)
                        assert body["status"] == "ok"
                        assert body["checks"]["worker"]["task_queue"] == settings.task_queue
                    finally:
                        await worker.shutdown()
                        with contextlib.suppress(Exception):
                            await run
                body = await _wait_status(http, 503)
                assert body["status"] == "unhealthy"
                assert body["failed"] == ["worker"]
                assert "no worker polled" in body["checks"]["worker"]["error"]


async def test_readyz_details_only_for_admins_and_checks_are_shared(
    base_settings: Settings, temporal_client: Client, monkeypatch
) -> None:
    settings = base_settings.model_copy(
        update={"task_queue": f"tq-{uuid.uuid4().hex[:8]}", "readyz_cache_secs": 300.0}
    )
    rounds = 0
    real_worker_check = readiness.worker_check

    async def counting_worker_check(*args: Any) -> dict[str, Any]:
        nonlocal rounds
        rounds += 1
        return await real_worker_check(*args)

    monkeypatch.setattr(readiness, "worker_check", counting_worker_check)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        engine = app.state.engine
        admin_key, _ = await create_key(engine, f"ops-{uuid.uuid4().hex[:6]}", scopes=("admin",))
        user_key, _ = await create_key(engine, f"user-{uuid.uuid4().hex[:6]}")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            anonymous = await asyncio.gather(*(http.get("/readyz") for _ in range(30)))
            as_user = await http.get("/readyz", headers={"X-API-Key": user_key})
            as_admin = await http.get("/readyz", headers={"X-API-Key": admin_key})
            wrong = await http.get("/readyz", headers={"X-API-Key": "orch_deadbeef_nope"})

    # No worker polls this queue: unhealthy, and anonymous callers learn nothing else.
    assert {r.status_code for r in anonymous} == {503}
    assert all(r.json() == {"status": "unhealthy"} for r in anonymous)
    assert as_user.status_code == 503 and as_user.json() == {"status": "unhealthy"}
    detail = as_admin.json()
    assert as_admin.status_code == 503 and detail["failed"] == ["worker"]
    assert detail["checks"]["postgres"]["ok"] and "breakers" in detail["checks"]
    assert wrong.status_code == 401
    assert rounds == 1  # 32 callers, one round of Temporal RPCs
