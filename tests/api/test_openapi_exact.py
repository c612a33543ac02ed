"""The OpenAPI document and the API agree (no services needed): Allow on 405, the webhook_url
pattern, the cursor and event-stream schemas."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.webhook_urls import url_pattern
from durable_orchestrator.data.task_list import (
    CURSOR_PATTERN,
    BadCursor,
    decode_cursor,
    encode_cursor,
)
from durable_orchestrator.settings import Settings


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(Settings(webhook_allowed_hosts=["hooks.example.com"])))


def test_405_allow_lists_every_method_of_the_path(client: TestClient) -> None:
    for method, path, allow in [
        ("OPTIONS", "/tasks", "GET, POST"),
        ("DELETE", "/memory/search", "POST"),
        ("PUT", "/memory/7", "DELETE"),
    ]:
        resp = client.request(method, path)
        assert resp.status_code == 405 and resp.headers["allow"] == allow, (method, path)
        assert resp.json()["error"]["code"] == "method_not_allowed"


def test_webhook_pattern_is_in_the_document_and_is_what_the_api_checks(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    field = spec["components"]["schemas"]["TaskCreate"]["properties"]["webhook_url"]
    [string] = [o for o in field["anyOf"] if o.get("type") == "string"]
    pattern = string["pattern"]
    assert pattern == url_pattern(["hooks.example.com"])
    for url, ok in [
        ("https://hooks.example.com/orchestrator", True),
        ("HTTP://Hooks.Example.com:8443/x?y=1", True),
        ("https://hooks.example.com.evil.com/", False),
        ("https://user:pw@hooks.example.com/", False),
        ("ftp://hooks.example.com/", False),
        ("https://hooks.example.com/a b", False),
    ]:
        assert bool(re.fullmatch(pattern, url)) is ok, url
    nobody = TestClient(create_app(Settings())).get("/openapi.json").json()
    field = nobody["components"]["schemas"]["TaskCreate"]["properties"]["webhook_url"]
    assert field["anyOf"] == [{"type": "null"}]  # no allowed host: no URL is accepted
    examples = nobody["components"]["schemas"]["TaskCreate"].get("examples", [])
    assert all("webhook_url" not in e for e in examples)


def test_every_cursor_the_pattern_admits_is_a_position() -> None:
    created = datetime(2026, 12, 2, 1, 2, 3, 456789, tzinfo=UTC)
    cursor = encode_cursor(created, "a" * 32)
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert decode_cursor(cursor) == (created, "a" * 32)
    assert decode_cursor("9" * 17 + "_" + "f" * 32)[0].year > 5000  # the largest still decodes
    with pytest.raises(BadCursor):
        decode_cursor("garbage")


def test_event_stream_is_documented_as_events(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ok = spec["paths"]["/tasks/{task_id}/events"]["get"]["responses"]["200"]["content"]
    assert list(ok) == ["text/event-stream"]
    assert ok["text/event-stream"]["schema"]["properties"]["data"] == {
        "type": "string",
        "description": "The event's JSON object.",
    }
    readyz = spec["paths"]["/readyz"]["get"]
    assert {} in readyz["security"]  # anonymous callers are allowed (status only)
