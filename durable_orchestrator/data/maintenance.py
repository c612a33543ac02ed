"""The statements of the maintenance jobs (activities/maintenance_activities.py): deletes by
age, each safe to run again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from durable_orchestrator.data.tables import ApiKey, AuditEntry, ShortTermEntry

_audit = AuditEntry.__table__


def _ago(name: str) -> sa.ColumnElement[Any]:
    return sa.func.now() - sa.bindparam(name, type_=sa.Interval)


_EXPIRE_SHORT_TERM = sa.delete(ShortTermEntry).where(ShortTermEntry.expires_at < sa.func.now())

# Every column, keyed by its name in the table, as the archive stores it. SKIP LOCKED: two
# overlapping runs archive disjoint rows instead of waiting on each other.
_OLD_AUDIT_ROWS = (
    sa.select(_audit)
    .where(_audit.c.at < _ago("age"))
    .order_by(_audit.c.id)
    .limit(sa.bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_DELETE_AUDIT_ROWS = sa.delete(AuditEntry).where(
    AuditEntry.id == sa.any_(sa.bindparam("ids", type_=ARRAY(sa.BigInteger)))
)

_PURGE_API_KEYS = sa.delete(ApiKey).where(
    sa.or_(ApiKey.revoked_at < _ago("grace"), ApiKey.expires_at < _ago("grace"))
)


async def expire_short_term(engine: AsyncEngine) -> int:
    """Delete the short-term memory entries past their `expires_at`; how many went."""
    async with engine.begin() as conn:
        return (await conn.execute(_EXPIRE_SHORT_TERM)).rowcount or 0


async def lock_old_audit_rows(conn: AsyncConnection, older_than: timedelta, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` audit rows older than `older_than`, oldest id first, locked until the
    caller's transaction ends (rows another transaction holds are left for the next batch)."""
    rows = await conn.execute(_OLD_AUDIT_ROWS, {"age": older_than, "limit": limit})
    return [dict(r) for r in rows.mappings()]


async def delete_audit_rows(conn: AsyncConnection, ids: list[int]) -> int:
    return (await conn.execute(_DELETE_AUDIT_ROWS, {"ids": ids})).rowcount or 0


async def purge_api_keys(engine: AsyncEngine, grace: timedelta) -> int:
    """Delete the keys revoked, or expired, more than `grace` ago; how many went."""
    async with engine.begin() as conn:
        return (await conn.execute(_PURGE_API_KEYS, {"grace": grace})).rowcount or 0
