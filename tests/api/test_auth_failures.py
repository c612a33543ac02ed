"""Failed authentication is limited per client address before any database work, and the
audit log gets one row per counted failure, not one per request of a flood."""

from __future__ import annotations

import uuid

import httpx
import sqlalchemy as sa
from temporalio.client import Client

from durable_orchestrator.data import keys
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI
from tests.utils import running_stack


async def _audit_rows(engine, path: str) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return (
            await conn.execute(
                sa.text(
                    "SELECT count(*) FROM audit_log WHERE action = 'auth.failure' "
                    "AND details->>'path' = :p"
                ),
                {"p": path},
            )
        ).scalar_one()


async def test_failed_auth_flood_gets_429_without_key_lookups_or_audit_rows(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, monkeypatch
) -> None:
    async with running_stack(
        base_settings, temporal_client, fake_llm, auth_failure_rate_limit="3/minute"
    ) as s:
        lookups = 0
        real_live_key = keys.live_key

        async def counting_live_key(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal lookups
            lookups += 1
            return await real_live_key(*args, **kwargs)

        monkeypatch.setattr(keys, "live_key", counting_live_key)
        path = f"/tasks/{uuid.uuid4().hex}"
        bad = {"X-API-Key": "orch_deadbeef_" + "x" * 32}
        codes = [(await s.http.get(path, headers=bad)).status_code for _ in range(10)]
        assert codes == [401] * 3 + [429] * 7
        assert lookups == 3  # the refused ones never reached the database
        assert await _audit_rows(s.engine, path) == 3

        refused = await s.http.get(path, headers=bad)
        body = refused.json()["error"]
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "ORCH_AUTH_FAILURE_RATE_LIMIT" in body["message"]
        assert (await s.http.get(path)).status_code == 429  # missing credentials count too

        # Another address is not affected.
        transport = httpx.ASGITransport(
            app=s.http._transport.app,  # type: ignore[attr-defined]
            client=("10.0.0.7", 4000),
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as other:
            assert (await other.get("/tasks", headers=s.headers)).status_code == 200
            assert (await other.get(path, headers=bad)).status_code == 401
