"""Auth: API keys and bearer JWTs, scopes, ownership, revocation; nothing secret in logs;
request ids; the audit log; settings that refuse placeholder secrets in production."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import sqlalchemy as sa
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError
from temporalio.client import Client

from durable_orchestrator.auth.api_keys import create_key, revoke_key
from durable_orchestrator.settings import Settings
from fake_openai import FakeOpenAI
from tests.api.helpers import hs256
from tests.utils import running_stack

SECRET = "test-jwt-secret-" + "x" * 32


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Everything structlog and stdlib logging emit (DEBUG and up) goes to one buffer."""
    buf = io.StringIO()
    old_config = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=buf),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s %(args)s"))
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        structlog.configure(**old_config)


def _rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


async def test_auth_matrix_right_codes_and_no_secret_in_logs(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    async with running_stack(base_settings, temporal_client, fake_llm, jwt_secret=SECRET) as s:
        e = s.engine
        user = s.user
        read_only, _ = await create_key(e, user, scopes=("tasks:read",))
        revoked, revoked_info = await create_key(e, user)
        await revoke_key(e, revoked_info.id)
        expired, _ = await create_key(e, user, expires_at=datetime.now(UTC) - timedelta(minutes=1))
        admin, _ = await create_key(e, "ops-" + uuid.uuid4().hex[:6], scopes=("admin",))
        _, other_key = await s.new_user()
        my_task = await s.submit("mine")

        good_jwt = hs256(SECRET, user)
        expired_jwt = hs256(SECRET, user, exp_in=-60)
        no_exp_jwt = jwt.encode({"sub": user, "scope": "tasks:read"}, SECRET, algorithm="HS256")
        forged_jwt = hs256("another-secret-" + "y" * 32, user)
        read_jwt = hs256(SECRET, user, scope="tasks:read")
        revoked_jti = uuid.uuid4().hex
        revoked_jwt = hs256(SECRET, user, jti=revoked_jti)
        none_alg = jwt.encode({"sub": user, "exp": int(time.time()) + 60}, None, algorithm="none")
        secrets_used = [s.key, read_only, revoked, expired, admin, other_key, good_jwt, expired_jwt,
                        no_exp_jwt, forged_jwt, read_jwt, revoked_jwt, none_alg]

        def key(k: str) -> dict[str, str]:
            return {"X-API-Key": k}

        def bearer(t: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {t}"}

        body = {"json": {"description": "auth matrix"}}
        matrix = [
            ("no credentials", "GET", "/tasks", {}, {}, 401),
            ("bad key", "GET", "/tasks", key("orch_deadbeef_notarealkeyatall"), {}, 401),
            ("garbage key", "GET", "/tasks", key("x" * 300), {}, 401),
            ("revoked key", "GET", "/tasks", key(revoked), {}, 401),
            ("expired key", "GET", "/tasks", key(expired), {}, 401),
            ("expired jwt", "GET", "/tasks", bearer(expired_jwt), {}, 401),
            ("jwt without exp", "GET", "/tasks", bearer(no_exp_jwt), {}, 401),
            ("forged jwt", "GET", "/tasks", bearer(forged_jwt), {}, 401),
            ("alg none", "GET", "/tasks", bearer(none_alg), {}, 401),
            ("not a jwt", "GET", "/tasks", bearer("not.a.jwt"), {}, 401),
            ("good key", "GET", "/tasks", s.headers, {}, 200),
            ("good jwt", "GET", "/tasks", bearer(good_jwt), {}, 200),
            ("good jwt reads own task", "GET", f"/tasks/{my_task}", bearer(good_jwt), {}, 200),
            ("read-only key submits", "POST", "/tasks", key(read_only), body, 403),
            ("read-only jwt submits", "POST", "/tasks", bearer(read_jwt), body, 403),
            ("jwt submits", "POST", "/tasks", bearer(good_jwt), body, 202),
            ("other user's task", "GET", f"/tasks/{my_task}", key(other_key), {}, 404),
            ("other user's events", "GET", f"/tasks/{my_task}/events", key(other_key), {}, 404),
            ("non-admin revokes", "POST", "/admin/tokens/revoke", s.headers,
             {"json": {"jti": revoked_jti}}, 403),
            ("admin revokes", "POST", "/admin/tokens/revoke", key(admin),
             {"json": {"jti": revoked_jti, "reason": "test"}}, 200),
            ("revoked jwt", "GET", "/tasks", bearer(revoked_jwt), {}, 401),
        ]
        bodies = []
        with captured_logs() as logs:
            for name, method, path, headers, kwargs, expected in matrix:
                resp = await s.http.request(method, path, headers=headers, **kwargs)
                assert resp.status_code == expected, (name, resp.status_code, resp.text)
                if expected >= 400:
                    err = resp.json()["error"]
                    assert err["code"] and err["message"], name
                bodies.append(resp.text + str(resp.headers))
        captured = logs.getvalue()
        assert "auth_failed" in captured  # the capture works: failures were logged ...
        async with e.connect() as conn:
            audit_rows = [
                str(r) for r in await conn.execute(sa.text("SELECT actor, action, outcome, request_id, details FROM audit_log"))
            ]
        for secret in secrets_used:
            # ... but neither keys nor tokens, in logs, responses or the audit log
            assert secret not in captured
            assert not any(secret in b for b in bodies)
            assert not any(secret in r for r in audit_rows)
        # The JWT's sub is who acted; its task is theirs.
        listing = await s.http.get("/tasks", headers=s.headers)
        assert any(t["description"] == "auth matrix" for t in listing.json()["items"])


async def test_rs256_public_key_and_no_algorithm_confusion(
    base_settings: Settings, temporal_client: Client, fake_llm: FakeOpenAI
) -> None:
    private, public = _rsa_pair()
    async with running_stack(base_settings, temporal_client, fake_llm, jwt_public_key=public) as s:
        token = jwt.encode(
            {"sub": s.user, "scope": "tasks:read", "exp": int(time.time()) + 60}, private, algorithm="RS256"
        )
        ok = await s.http.get("/tasks", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text
        # An HS256 token "signed" with the public key must not pass as RS256 (PyJWT refuses
        # to make one, so build it by hand).
        import base64
        import hashlib
        import hmac
        import json

        def b64(b: bytes) -> str:
            return base64.urlsafe_b64encode(b).decode().rstrip("=")

        signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(
            json.dumps({"sub": s.user, "scope": "tasks:read", "exp": int(time.time()) + 60}).encode()
        )
        sig = hmac.new(public.encode(), signing_input.encode(), hashlib.sha256).digest()
        confused = signing_input + "." + b64(sig)
        bad = await s.http.get("/tasks", headers={"Authorization": f"Bearer {confused}"})
        assert bad.status_code == 401


async def test_bearer_refused_when_jwt_not_configured(stack) -> None:  # type: ignore[no-untyped-def]
    resp = await stack.http.get("/tasks", headers={"Authorization": f"Bearer {hs256(SECRET, stack.user)}"})
    assert resp.status_code == 401
    assert "not enabled" in resp.json()["error"]["message"]


async def test_request_id_echoed_generated_and_on_errors(stack) -> None:  # type: ignore[no-untyped-def]
    mine = await stack.http.get("/tasks", headers={**stack.headers, "X-Request-ID": "req-123.abc"})
    assert mine.headers["x-request-id"] == "req-123.abc"
    generated = await stack.http.get("/tasks", headers=stack.headers)
    assert len(generated.headers["x-request-id"]) == 32
    hostile = await stack.http.get("/tasks", headers={**stack.headers, "X-Request-ID": "a b\x7f" + "x" * 200})
    assert hostile.headers["x-request-id"] != "a b\x7f" + "x" * 200
    for resp in (
        await stack.http.get("/tasks", headers={"X-Request-ID": "rid-401"}),
        await stack.http.get("/nope", headers={"X-Request-ID": "rid-404"}),
        await stack.http.post("/tasks", content=b"x" * 300_000, headers={**stack.headers, "X-Request-ID": "rid-413"}),
        await stack.http.post("/tasks", json={"description": ""}, headers={**stack.headers, "X-Request-ID": "rid-422"}),
        await stack.http.delete("/tasks", headers={**stack.headers, "X-Request-ID": "rid-405"}),
    ):
        assert resp.headers["x-request-id"] == f"rid-{resp.status_code}", resp
        assert set(resp.json()) == {"error"} and resp.json()["error"]["code"]
    # The auth failure was audited under its request id.
    async with stack.engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text("SELECT actor, outcome, details FROM audit_log WHERE request_id='rid-401' AND action='auth.failure'")
            )
        ).one()
    assert row.actor == "anonymous" and row.outcome == "denied"
    assert row.details["reason"] == "missing" and row.details["path"] == "/tasks"


async def test_key_lifecycle_and_token_revocation_are_audited(stack) -> None:  # type: ignore[no-untyped-def]
    key, info = await create_key(stack.engine, stack.user, actor="cli:tester")
    assert await revoke_key(stack.engine, info.prefix, actor="cli:tester")
    assert not await revoke_key(stack.engine, "nope-nope", actor="cli:tester")
    async with stack.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text("SELECT action, outcome, details FROM audit_log WHERE actor='cli:tester' ORDER BY id")
            )
        ).all()
    assert [(r.action, r.outcome) for r in rows] == [
        ("key.create", "success"), ("key.revoke", "success"), ("key.revoke", "not_found")
    ]
    assert rows[0].details["key_id"] == info.id and rows[0].details["prefix"] == info.prefix
    assert all(key not in str(r.details) for r in rows)


@pytest.mark.usefixtures("subprocesses")  # the system tier
def test_cli_tokens_revoke_is_refused_afterwards_and_audited(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    jti = uuid.uuid4().hex
    env = {**os.environ, "DATABASE_URL": pg_url, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-m", "durable_orchestrator.cli", "tokens", "revoke", jti, "--reason", "lost", "--data-dir", str(tmp_path)],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"revoked token {jti}" in out.stdout

    import asyncio

    from durable_orchestrator.data.engine import create_engine

    async def check() -> None:
        engine = create_engine(pg_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                row = (await conn.execute(
                    sa.text("SELECT actor, outcome, details FROM audit_log WHERE action='token.revoke' AND details->>'jti'=:j"),
                    {"j": jti},
                )).one()
                assert row.actor.startswith("cli:") and row.outcome == "success"
                assert (await conn.execute(sa.text("SELECT count(*) FROM revoked_tokens WHERE jti=:j"), {"j": jti})).scalar_one() == 1
        finally:
            await engine.dispose()

    asyncio.run(check())


def test_settings_refuse_placeholder_secrets_in_production() -> None:
    with pytest.raises(ValidationError, match="ORCH_WEBHOOK_SECRET"):
        Settings(environment="production")
    with pytest.raises(ValidationError, match="ORCH_JWT_SECRET"):
        Settings(environment="production", webhook_secret="w" * 40, jwt_algorithm="HS256")
    with pytest.raises(ValidationError, match="ORCH_JWT_SECRET"):
        Settings(environment="production", webhook_secret="w" * 40, jwt_secret="change-me")
    with pytest.raises(ValidationError, match="ORCH_JWT_PUBLIC_KEY"):
        Settings(environment="production", webhook_secret="w" * 40, jwt_algorithm="RS256")
    ok = Settings(environment="production", webhook_secret="w" * 40, jwt_secret="s" * 40)
    assert ok.jwt_algorithm_effective == "HS256"
    assert "s" * 40 not in repr(ok) and "w" * 40 not in repr(ok)
    # Development keeps working with the placeholders.
    assert Settings(environment="development").webhook_secret is None
    with pytest.raises(ValidationError, match="ORCH_WEBHOOK_SECRET is not set"):
        Settings(environment="production", webhook_secret="change-me", jwt_secret="s" * 40)
