"""Users, their API keys (stored as hashes) and the bearer tokens revoked by `jti`.

The key format, hashing and auditing live in `durable_orchestrator.auth`; this module holds
the statements. Writes take the caller's connection, so each joins the transaction that also
writes its audit row; the per-request lookups take the engine and read in autocommit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, select

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import ApiKey, RevokedToken, User

_ADD_USER = pg_insert(User).values(id=sa.bindparam("user_id")).on_conflict_do_nothing()

_ADD_KEY = sa.insert(ApiKey).returning(ApiKey.created_at)

# Every request with an X-API-Key runs this: one primary-key-like (unique index) read.
_LIVE_KEY = select(ApiKey.id, ApiKey.user_id, ApiKey.scopes, ApiKey.max_running_tasks).where(
    ApiKey.key_hash == sa.bindparam("key_hash"),
    col(ApiKey.revoked_at).is_(None),
    sa.or_(col(ApiKey.expires_at).is_(None), col(ApiKey.expires_at) > sa.func.now()),
)

_ALL_KEYS = select(
    ApiKey.id, ApiKey.user_id, ApiKey.prefix, ApiKey.name, ApiKey.scopes,
    ApiKey.created_at, ApiKey.expires_at, ApiKey.revoked_at,
).order_by(col(ApiKey.created_at))
_KEYS_OF_USER = _ALL_KEYS.where(ApiKey.user_id == sa.bindparam("user_id"))

# Both the id and the public prefix name a key; a prefix may name several (8 hex digits).
_LIVE_MATCHES = (
    select(ApiKey.id, ApiKey.user_id, ApiKey.prefix)
    .where(
        sa.or_(ApiKey.id == sa.bindparam("id_or_prefix"), ApiKey.prefix == sa.bindparam("id_or_prefix")),
        col(ApiKey.revoked_at).is_(None),
    )
    .order_by(col(ApiKey.created_at))
    .with_for_update()
)

_REVOKE_KEY = (
    sa.update(ApiKey)
    .where(ApiKey.id == sa.bindparam("key_id"), col(ApiKey.revoked_at).is_(None))
    .values(revoked_at=sa.func.now())
    .returning(ApiKey.id, ApiKey.user_id)
)

_TOKEN_REVOKED = select(RevokedToken.jti).where(RevokedToken.jti == sa.bindparam("jti"))

_REVOKE_TOKEN = (
    pg_insert(RevokedToken)
    .on_conflict_do_nothing(index_elements=[RevokedToken.jti])
    .returning(RevokedToken.jti)
)


async def add_user(conn: AsyncConnection, user_id: str) -> None:
    """Make sure the user exists (users are created by their first key or task)."""
    await conn.execute(_ADD_USER, {"user_id": user_id})


async def add_key(
    conn: AsyncConnection,
    *,
    key_id: str,
    user_id: str,
    prefix: str,
    key_hash: str,
    name: str | None,
    scopes: Sequence[str],
    expires_at: datetime | None,
    max_running_tasks: int | None = None,
) -> datetime:
    """Store a key of an existing user; returns its created_at (the database clock's)."""
    return (
        await conn.execute(
            _ADD_KEY,
            {"id": key_id, "user_id": user_id, "prefix": prefix, "key_hash": key_hash,
             "name": name, "scopes": list(scopes), "expires_at": expires_at,
             "max_running_tasks": max_running_tasks},
        )
    ).scalar_one()


async def live_key(engine: AsyncEngine, key_hash: str) -> sa.Row[Any] | None:
    """(id, user_id, scopes, max_running_tasks) of the unrevoked, unexpired key with this hash, if any."""
    async with read(engine) as conn:
        return (await conn.execute(_LIVE_KEY, {"key_hash": key_hash})).first()


async def list_keys(engine: AsyncEngine, user_id: str | None = None) -> list[sa.Row[Any]]:
    """Every key (of one user when given), oldest first: id, user_id, prefix, name, scopes,
    created_at, expires_at, revoked_at."""
    async with read(engine) as conn:
        if user_id:
            return list((await conn.execute(_KEYS_OF_USER, {"user_id": user_id})).all())
        return list((await conn.execute(_ALL_KEYS)).all())


async def live_matches(conn: AsyncConnection, id_or_prefix: str) -> list[sa.Row[Any]]:
    """The unrevoked keys this id or prefix names, locked until the transaction ends:
    (id, user_id, prefix) of each, oldest first."""
    return list((await conn.execute(_LIVE_MATCHES, {"id_or_prefix": id_or_prefix})).all())


async def revoke_key(conn: AsyncConnection, key_id: str) -> sa.Row[Any] | None:
    """Revoke the live key with this id; its (id, user_id), or None if there was none."""
    return (await conn.execute(_REVOKE_KEY, {"key_id": key_id})).first()


async def is_token_revoked(engine: AsyncEngine, jti: str) -> bool:
    async with read(engine) as conn:
        return (await conn.execute(_TOKEN_REVOKED, {"jti": jti})).first() is not None


async def revoke_token(
    conn: AsyncConnection, jti: str, *, revoked_by: str, reason: str | None
) -> bool:
    """True if newly revoked, False if it already was."""
    row = (
        await conn.execute(_REVOKE_TOKEN, {"jti": jti, "revoked_by": revoked_by, "reason": reason})
    ).first()
    return row is not None
