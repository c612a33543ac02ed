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

from api.app import create_app
from durable_orchestrator.settings import Settings
from worker import build_worker


async def _wait_status(http: httpx.AsyncClient, code: int, within: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        resp = await http.get("/readyz")
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
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
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
