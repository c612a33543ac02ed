"""Rate limits: per key for submissions, per user for memory search, Redis shared by replicas."""

from __future__ import annotations

import time

import httpx
from limits import parse
from temporalio.client import Client

from api.app import create_app
from api.rate_limits import get_rate_limits
from durable_orchestrator.auth.api_keys import authenticate
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI
from tests.utils import Stack, running_stack


def _assert_headers(resp: httpx.Response, limit: int, remaining: int) -> None:
    assert resp.headers["x-ratelimit-limit"] == str(limit), resp.headers
    assert resp.headers["x-ratelimit-remaining"] == str(remaining), resp.headers
    reset = int(resp.headers["x-ratelimit-reset"])
    assert time.time() - 1 <= reset <= time.time() + 61


async def _search(s: Stack, headers: dict[str, str]) -> httpx.Response:
    return await s.http.post("/memory/search", json={"query": "tea"}, headers=headers)


async def _submit(s: Stack, key: str) -> httpx.Response:
    return await s.http.post("/tasks", json={"description": "rate me"}, headers={"X-API-Key": key})


async def test_submission_limit_per_key_and_memory_search_limit_per_user(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    async with running_stack(
        base_settings, temporal_client, fake_llm, rate_limit="3/minute", memory_search_rate_limit="2/minute"
    ) as s:
        responses = [await _submit(s, s.key) for _ in range(4)]
        assert [r.status_code for r in responses] == [202, 202, 202, 429]
        for i, r in enumerate(responses[:3]):
            _assert_headers(r, 3, 2 - i)
        limited = responses[3]
        _assert_headers(limited, 3, 0)
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        err = limited.json()["error"]
        assert err["code"] == "rate_limited" and err["details"]["limit"] == "task_submit"
        # Limited requests still get a request id and are not stored.
        assert limited.headers["x-request-id"]

        # Per key: a second key of the same user has its own budget.
        other_key = (await s.new_user(s.user))[1]
        r = await _submit(s, other_key)
        assert r.status_code == 202
        _assert_headers(r, 3, 2)
        # A 4xx after the limiter counted still carries the headers.
        bad = await s.http.post("/tasks", json={"description": ""}, headers={"X-API-Key": other_key})
        assert bad.status_code == 422
        _assert_headers(bad, 3, 1)

        # Memory search is limited independently (task budget of s.key is exhausted) and per
        # user: both keys of the user share its 2/minute.
        m1 = await _search(s, s.headers)
        m2 = await _search(s, {"X-API-Key": other_key})
        m3 = await _search(s, s.headers)
        assert [m1.status_code, m2.status_code, m3.status_code] == [200, 200, 429]
        _assert_headers(m1, 2, 1)
        _assert_headers(m3, 2, 0)
        assert m3.json()["error"]["details"]["limit"] == "memory_search"
        # Another user is unaffected.
        _, stranger = await s.new_user()
        assert (await _search(s, {"X-API-Key": stranger})).status_code == 200
        assert get_rate_limits(s.http._transport.app).backend == "memory"  # type: ignore[attr-defined]


async def test_redis_backend_is_shared_by_replicas(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, redis_url: str
) -> None:
    async with running_stack(
        base_settings, temporal_client, fake_llm, rate_limit="3/minute", redis_url=redis_url
    ) as s:
        # A second API replica: its own app, process-local state, same Redis.
        replica = create_app(s.settings)
        async with replica.router.lifespan_context(replica):
            transport = httpx.ASGITransport(app=replica)
            async with httpx.AsyncClient(transport=transport, base_url="http://replica") as other:
                a1 = await _submit(s, s.key)
                a2 = await _submit(s, s.key)
                b1 = await other.post("/tasks", json={"description": "rate me"}, headers=s.headers)
                b2 = await other.post("/tasks", json={"description": "rate me"}, headers=s.headers)
                assert [a1.status_code, a2.status_code, b1.status_code, b2.status_code] == [202, 202, 202, 429]
                _assert_headers(b1, 3, 0)
                assert int(b2.headers["retry-after"]) >= 1
                assert get_rate_limits(replica).backend == "redis"
                # The budget lives in Redis: a third replica's limiter sees it exhausted.
                principal = await authenticate(s.engine, s.key)
                assert principal is not None
                fresh = create_app(s.settings)
                assert not await get_rate_limits(fresh).limiter.test(
                    parse("3/minute"), "task_submit", "key", principal.key_id
                )
