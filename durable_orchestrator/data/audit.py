"""The audit log: who did what, when, under which request id, and how it ended.

`record` takes an engine (own short transaction) or a connection (joins the caller's
transaction, so the audit row commits or rolls back with the change it describes). Never put
secrets (keys, tokens) in `details`."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from durable_orchestrator.data.tables import AuditEntry

# `details` is serialised here, with default=str, rather than by the JSONB type: a datetime or
# other odd value in it must not make the action it describes fail.
_INSERT = sa.insert(AuditEntry).values(
    details=sa.cast(sa.bindparam("details_json", type_=sa.Text), JSONB)
)


async def record(
    conn_or_engine: AsyncConnection | AsyncEngine,
    actor: str,
    action: str,
    outcome: str,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """actor: a user id, `cli:<os user>` or `anonymous`; action: dotted verb such as
    `key.create`, `key.revoke`, `token.revoke`, `auth.failure`, `approval.decide`,
    `task.cancel`, `task.delete`; outcome: `success`, `denied`, `failure` or `not_found`."""
    params = {
        "actor": actor,
        "action": action,
        "outcome": outcome,
        "request_id": request_id,
        "details_json": json.dumps(details or {}, default=str),
    }
    if isinstance(conn_or_engine, AsyncConnection):
        await conn_or_engine.execute(_INSERT, params)
        return
    async with conn_or_engine.begin() as conn:
        await conn.execute(_INSERT, params)
