"""Users, API keys and revoked tokens (data/keys.py), through the auth functions that use it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from durable_orchestrator.auth import api_keys, bearer
from durable_orchestrator.data import keys
from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import AuditEntry, User


async def test_keys_listed_authenticated_and_revoked(engine: AsyncEngine) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    first, first_info = await api_keys.create_key(engine, user, name="laptop", scopes=("tasks:read",))
    later = datetime.now(UTC) + timedelta(days=1)
    second, second_info = await api_keys.create_key(engine, user, expires_at=later)
    await api_keys.create_key(engine, f"other-{user}")

    listed = await api_keys.list_keys(engine, user)
    assert [k.id for k in listed] == [first_info.id, second_info.id]
    assert listed[0] == first_info  # what create_key returned is what is stored
    assert listed[1].expires_at == later and listed[1].scopes == list(api_keys.DEFAULT_SCOPES)
    assert {first_info.id, second_info.id} <= {k.id for k in await api_keys.list_keys(engine)}

    principal = await api_keys.authenticate(engine, first)
    assert principal is not None
    assert (principal.user_id, principal.key_id, principal.scopes) == (
        user, first_info.id, frozenset({"tasks:read"})
    )
    assert await api_keys.authenticate(engine, first + "x") is None

    assert await api_keys.revoke_key(engine, first_info.id)
    assert not await api_keys.revoke_key(engine, first_info.id)  # revoked once only
    assert await api_keys.authenticate(engine, first) is None
    assert await api_keys.authenticate(engine, second) is not None
    [revoked, live] = await api_keys.list_keys(engine, user)
    assert revoked.revoked_at is not None and live.revoked_at is None


async def test_add_user_is_idempotent(engine: AsyncEngine) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await keys.add_user(conn, user)
        await keys.add_user(conn, user)
    async with read(engine) as conn:
        count = (await conn.execute(select(sa.func.count()).where(User.id == user))).scalar_one()
    assert count == 1


async def test_token_revoked_once_and_audited_each_time(engine: AsyncEngine) -> None:
    jti = uuid.uuid4().hex
    assert not await bearer.is_revoked(engine, jti)
    assert await bearer.revoke(engine, jti, actor="tester", reason="lost")
    assert not await bearer.revoke(engine, jti, actor="tester")
    assert await bearer.is_revoked(engine, jti)
    async with read(engine) as conn:
        outcomes = (
            await conn.execute(
                select(AuditEntry.outcome)
                .where(AuditEntry.action == "token.revoke", AuditEntry.details["jti"].astext == jti)
                .order_by(AuditEntry.id)
            )
        ).scalars().all()
    assert outcomes == ["success", "already_revoked"]


async def test_a_prefix_shared_by_two_live_keys_revokes_nothing(engine) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    prefix = uuid.uuid4().hex[:8]
    ids = [f"key_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    async with engine.begin() as conn:
        await keys.add_user(conn, user)
        for i, key_id in enumerate(ids):
            await keys.add_key(
                conn, key_id=key_id, user_id=user, prefix=prefix, key_hash=f"h-{key_id}-{i}",
                name=None, scopes=["tasks:read"], expires_at=None,
            )

    with pytest.raises(api_keys.AmbiguousKeyPrefix) as err:
        await api_keys.revoke_key(engine, prefix)
    assert prefix in str(err.value) and all(i in str(err.value) for i in ids)
    assert [k.revoked_at for k in await api_keys.list_keys(engine, user)] == [None, None]

    assert await api_keys.revoke_key(engine, ids[0])  # by id: exactly that one
    assert await api_keys.revoke_key(engine, prefix)  # now the prefix names one live key
    assert all(k.revoked_at is not None for k in await api_keys.list_keys(engine, user))
