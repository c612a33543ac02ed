"""Bad input and failures of every kind answer with the one error envelope and a request id."""

from __future__ import annotations

import httpx
from temporalio.client import Client

from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI
from tests.utils import Stack, running_stack


def _envelope(resp: httpx.Response) -> dict:  # type: ignore[type-arg]
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert resp.headers["x-request-id"]
    return body["error"]


async def test_every_4xx_uses_the_envelope(stack: Stack) -> None:
    h = stack.headers
    cases = [
        ("metadata too large", "POST", "/tasks", {"json": {"description": "x", "metadata": {"k": "v" * 17_000}}}, 422),
        ("unknown field", "POST", "/tasks", {"json": {"description": "x", "priority": 1}}, 422),
        ("null description", "POST", "/tasks", {"json": {"description": None}}, 422),
        ("array body", "POST", "/tasks", {"json": ["description"]}, 422),
        ("form body", "POST", "/tasks", {"data": {"description": "x"}}, 422),
        ("text body", "POST", "/tasks", {"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 422),
        ("long idempotency key", "POST", "/tasks", {"json": {"description": "x"}, "headers": {"Idempotency-Key": "k" * 201}}, 422),
        # Empty is not "no key": a second submission with it was an unhandled unique violation.
        ("empty idempotency key", "POST", "/tasks", {"json": {"description": "x"}, "headers": {"Idempotency-Key": ""}}, 422),
        ("long webhook url", "POST", "/tasks", {"json": {"description": "x", "webhook_url": "http://a/" + "p" * 2000}}, 422),
        ("wait not a number", "POST", "/tasks?wait=soon", {"json": {"description": "x"}}, 422),
        ("limit not a number", "GET", "/tasks?limit=many", {}, 422),
        ("unknown route", "GET", "/nowhere", {}, 404),
        ("wrong method", "PUT", "/tasks", {}, 405),
        ("unknown task", "GET", "/tasks/does-not-exist", {}, 404),
        ("admin body unknown field", "POST", "/admin/tokens/revoke", {"json": {"jti": "a", "x": 1}}, 403),
    ]
    for name, method, path, kwargs, status in cases:
        headers = {**h, **kwargs.pop("headers", {})}
        resp = await stack.http.request(method, path, headers=headers, **kwargs)
        assert resp.status_code == status, (name, resp.status_code, resp.text)
        err = _envelope(resp)
        assert err["code"] and err["message"], name


async def test_unhandled_error_is_a_500_envelope_with_request_id(stack: Stack) -> None:
    app = stack.http._transport.app  # type: ignore[attr-defined]

    async def boom() -> None:
        raise RuntimeError("secret internals must not leak")

    app.add_api_route("/_test/boom", boom, methods=["GET"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        resp = await http.get("/_test/boom", headers={"X-Request-ID": "rid-boom"})
    assert resp.status_code == 500
    err = _envelope(resp)
    assert resp.headers["x-request-id"] == "rid-boom"
    assert err["code"] == "internal_error" and "secret" not in resp.text


async def test_rate_limit_storage_down_fails_open(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    async with running_stack(
        base_settings, temporal_client, fake_llm, redis_url="redis://127.0.0.1:1/0", rate_limit="1/minute"
    ) as s:
        for _ in range(2):
            resp = await s.http.post("/tasks", json={"description": "x"}, headers=s.headers)
            assert resp.status_code == 202, resp.text
            assert "x-ratelimit-limit" not in resp.headers


async def test_text_postgres_cannot_store_is_refused_not_a_500(stack: Stack) -> None:
    """Found by Schemathesis: NUL characters and unpaired surrogates reached the INSERT."""
    h = stack.headers
    bodies = [
        b'{"description": "a\\u0000b"}',
        b'{"description": "x", "metadata": {"k\\u0000": 1}}',
        b'{"description": "x", "metadata": {"k": ["\\u0000"]}}',
        b'{"description": "x", "metadata": {"k": "\\ud963"}}',
    ]
    for raw in bodies:
        resp = await stack.http.post("/tasks", content=raw, headers={**h, "Content-Type": "application/json"})
        assert resp.status_code in (400, 422), (raw, resp.text)
        _envelope(resp)
    for path in ("/tasks/a%00b", "/tasks/a%00b/events", "/tasks?cursor=%00", "/tasks?status=%00"):
        resp = await stack.http.get(path, headers=h)
        assert resp.status_code == 400, (path, resp.text)
        assert _envelope(resp)["code"] == "bad_request"
