"""Webhooks: one HMAC-signed POST when the task ends, retried by Temporal on non-2xx."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from temporalio.client import Client

from activities.webhook_activities import SIGNATURE_HEADER, TIMESTAMP_HEADER
from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import workflow_id_for
from fake_openai import FakeOpenAI
from tests.utils import running_stack

SECRET = "whsec-test-" + "z" * 24
# The receiver listens on loopback: opted in explicitly, as an operator would for an internal host.
HOOKS_ON_LOOPBACK = {
    "webhook_allowed_hosts": ["127.0.0.1"],
    "webhook_private_hosts": ["127.0.0.1"],
    "webhook_secret": SECRET,
}


@dataclass
class Receiver:
    url: str
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived_at: list[float] = field(default_factory=list)
    fail_first: int = 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.arrived_at.append(time.time())
            state.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
            code = 503 if len(state.calls) <= state.fail_first else 204
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def receiver_verify(secret: str, headers: dict[str, str], body: bytes, *, now: float) -> bool:
    """The receiver recipe of docs/api.md ("Webhooks"), written out here rather than imported
    from the product, so a wrong signature on the sending side cannot agree with itself."""
    ts = headers[TIMESTAMP_HEADER.lower()]
    if abs(now - int(ts)) > 300:
        return False  # stale: possibly replayed
    want = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, headers[SIGNATURE_HEADER.lower()])


def _check_signed(headers: dict[str, str], body: bytes, arrived_at: float) -> dict:  # type: ignore[type-arg]
    assert headers["content-type"] == "application/json"
    assert headers[SIGNATURE_HEADER.lower()].startswith("sha256=")
    sent_at = int(headers[TIMESTAMP_HEADER.lower()])
    assert sent_at <= arrived_at + 1, "the timestamp is the time of sending, not a later one"
    assert receiver_verify(SECRET, headers, body, now=arrived_at)
    assert not receiver_verify("wrong-secret", headers, body, now=arrived_at)
    # A tampered body, or a replay with a refreshed timestamp, fails the signature.
    assert not receiver_verify(SECRET, headers, body.replace(b'"status"', b'"Status"'), now=arrived_at)
    assert not receiver_verify(SECRET, headers, body + b" ", now=arrived_at)
    refreshed = {**headers, TIMESTAMP_HEADER.lower(): str(sent_at + 60)}
    assert not receiver_verify(SECRET, refreshed, body, now=arrived_at)
    # The same call captured and replayed more than five minutes later is refused.
    assert not receiver_verify(SECRET, headers, body, now=sent_at + 301)
    return json.loads(body)


async def test_webhook_gets_one_signed_call(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, receiver: Receiver
) -> None:
    async with running_stack(
        base_settings, temporal_client, fake_llm, **HOOKS_ON_LOOPBACK
    ) as s:
        task_id = await s.submit("hook me", webhook_url=receiver.url)
        # The workflow returns only after its webhook activity: then the count is final.
        await temporal_client.get_workflow_handle(workflow_id_for(task_id)).result()
        assert len(receiver.calls) == 1
        headers, body = receiver.calls[0]
        payload = _check_signed(headers, body, receiver.arrived_at[0])
        task = await s.get(task_id)
        assert payload == {"task_id": task_id, "status": "completed", "result": task["result"], "error": None}

        # A task without a webhook sends nothing.
        plain = await s.submit("no hook")
        await temporal_client.get_workflow_handle(workflow_id_for(plain)).result()
        assert len(receiver.calls) == 1


async def test_webhook_retried_until_2xx(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    async with running_stack(
        base_settings, temporal_client, fake_llm, **HOOKS_ON_LOOPBACK
    ) as s:
        task_id = await s.submit("hook me twice", webhook_url=receiver.url)
        await temporal_client.get_workflow_handle(workflow_id_for(task_id)).result()
        assert len(receiver.calls) == 3  # 503, 503, then accepted; nothing after
        for (headers, body), arrived_at in zip(receiver.calls, receiver.arrived_at, strict=True):
            assert _check_signed(headers, body, arrived_at)["task_id"] == task_id


async def test_webhook_url_must_be_allowed(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    async with running_stack(
        base_settings, temporal_client, fake_llm, webhook_allowed_hosts=["127.0.0.1"]
    ) as s:
        for url in ("http://localhost:9/hook", "ftp://127.0.0.1/x", "127.0.0.1/x",
                    "http://user:pw@127.0.0.1/x", "http://127.0.0.1.evil.test/x", "not a url"):
            resp = await s.http.post("/tasks", json={"description": "x", "webhook_url": url}, headers=s.headers)
            assert resp.status_code == 422, (url, resp.text)
            assert resp.json()["error"]["details"][0]["field"] == "webhook_url"
        # Allowed host, but loopback without the opt-in; then no secret configured at all.
        resp = await s.http.post(
            "/tasks", json={"description": "x", "webhook_url": "http://127.0.0.1:9/hook"}, headers=s.headers
        )
        assert resp.status_code == 422
        assert "loopback" in resp.json()["error"]["details"][0]["message"]
        assert "ORCH_WEBHOOK_PRIVATE_HOSTS" in resp.json()["error"]["details"][0]["message"]
    async with running_stack(
        base_settings, temporal_client, fake_llm, **{**HOOKS_ON_LOOPBACK, "webhook_secret": None}
    ) as s:
        resp = await s.http.post(
            "/tasks", json={"description": "x", "webhook_url": "http://127.0.0.1:9/hook"}, headers=s.headers
        )
        assert resp.status_code == 422
        assert "ORCH_WEBHOOK_SECRET is set" in resp.json()["error"]["details"][0]["message"]


async def test_a_webhook_name_resolving_to_loopback_is_never_called(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI, receiver: Receiver
) -> None:
    # "localhost" passes the allow-list; it resolves to loopback and is not opted in.
    async with running_stack(
        base_settings, temporal_client, fake_llm, webhook_allowed_hosts=["localhost"], webhook_secret=SECRET
    ) as s:
        task_id = await s.submit("hook me", webhook_url=receiver.url.replace("127.0.0.1", "localhost"))
        await temporal_client.get_workflow_handle(workflow_id_for(task_id)).result()
        assert receiver.calls == []
        assert (await s.get(task_id))["status"] == "completed"  # a refused hook changes no outcome
