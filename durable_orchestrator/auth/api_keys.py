"""API keys: shown once, stored as a SHA-256 hash (keys are 192-bit random, so a slow hash
buys nothing), identified by a short public prefix."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import audit, keys

ALL_SCOPES = ("tasks:write", "tasks:read", "memory:read", "memory:write", "admin")
DEFAULT_SCOPES = ("tasks:write", "tasks:read", "memory:read", "memory:write")
KEY_PREFIX = "orch"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Principal:
    user_id: str
    key_id: str
    scopes: frozenset[str]
    # This key's own bound on the user's running tasks (None: ORCH_USER_MAX_RUNNING_TASKS).
    max_running_tasks: int | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass
class KeyInfo:
    id: str
    user_id: str
    prefix: str
    name: str | None
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


async def create_key(
    engine: AsyncEngine,
    user_id: str,
    *,
    name: str | None = None,
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
    expires_at: datetime | None = None,
    max_running_tasks: int | None = None,
    actor: str = "system",
    request_id: str | None = None,
) -> tuple[str, KeyInfo]:
    """Returns (the key, its record). The key itself is never stored (nor audited: the audit
    row names the key id and prefix)."""

    unknown = set(scopes) - set(ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}; known: {', '.join(ALL_SCOPES)}")
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(24)}"
    key_id = f"key_{secrets.token_hex(6)}"
    async with engine.begin() as conn:
        await keys.add_user(conn, user_id)
        created_at = await keys.add_key(
            conn, key_id=key_id, user_id=user_id, prefix=prefix, key_hash=hash_key(key),
            name=name, scopes=scopes, expires_at=expires_at, max_running_tasks=max_running_tasks,
        )
        await audit.record(
            conn, actor, "key.create", "success", request_id,
            {"key_id": key_id, "prefix": prefix, "user_id": user_id, "scopes": list(scopes),
             "expires_at": expires_at.isoformat() if expires_at else None},
        )
    return key, KeyInfo(key_id, user_id, prefix, name, list(scopes), created_at, expires_at, None)


async def authenticate(engine: AsyncEngine, key: str) -> Principal | None:
    row = await keys.live_key(engine, hash_key(key))
    if row is None:
        return None
    return Principal(user_id=row.user_id, key_id=row.id, scopes=frozenset(row.scopes),
                     max_running_tasks=row.max_running_tasks)


async def list_keys(engine: AsyncEngine, user_id: str | None = None) -> list[KeyInfo]:
    return [KeyInfo(**row._mapping) for row in await keys.list_keys(engine, user_id)]


class AmbiguousKeyPrefix(ValueError):
    """A prefix shared by several live keys: revoking "all of them" is never what was meant."""

    def __init__(self, prefix: str, key_ids: list[str]) -> None:
        super().__init__(
            f"key prefix {prefix!r} matches {len(key_ids)} active keys ({', '.join(key_ids)}); "
            "revoke one of them by its id"
        )
        self.prefix = prefix
        self.key_ids = key_ids


async def revoke_key(
    engine: AsyncEngine,
    key_id_or_prefix: str,
    *,
    actor: str = "system",
    request_id: str | None = None,
) -> bool:
    """Revoke the one live key with this id or prefix; False when there is none. A prefix
    that names several live keys raises AmbiguousKeyPrefix and revokes nothing."""
    async with engine.begin() as conn:
        matches = await keys.live_matches(conn, key_id_or_prefix)
        by_id = [m for m in matches if m.id == key_id_or_prefix]
        ambiguous = [m.id for m in matches] if len(matches) > 1 and not by_id else []
        if ambiguous:  # audited (committed), then refused
            await audit.record(
                conn, actor, "key.revoke", "ambiguous", request_id,
                {"key": key_id_or_prefix, "matches": ambiguous},
            )
    if ambiguous:
        raise AmbiguousKeyPrefix(key_id_or_prefix, ambiguous)
    async with engine.begin() as conn:
        matches = await keys.live_matches(conn, key_id_or_prefix)
        by_id = [m for m in matches if m.id == key_id_or_prefix]
        if len(matches) > 1 and not by_id:  # a second key with this prefix appeared meanwhile
            raise AmbiguousKeyPrefix(key_id_or_prefix, [m.id for m in matches])
        target = by_id or matches
        revoked = []
        if target:
            row = await keys.revoke_key(conn, target[0].id)
            if row is not None:
                revoked.append({"key_id": row.id, "user_id": row.user_id})
        await audit.record(
            conn, actor, "key.revoke", "success" if revoked else "not_found", request_id,
            {"key": key_id_or_prefix, "revoked": revoked},
        )
    return bool(revoked)
