"""Activities of the maintenance workflows. Each is safe to run again (deletes are by age;
the audit archive writes a file per run id before deleting exactly the rows it wrote).

Tables owned by other modules (short_term_memory, audit_log) are looked up at run time: when
the table does not exist on this database the job reports `skipped` and does nothing."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from temporalio import activity

from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import (
    ARCHIVE_AUDIT_LOG_ACTIVITY,
    EXPIRE_SHORT_TERM_MEMORY_ACTIVITY,
    PURGE_API_KEYS_ACTIVITY,
    MaintenanceInput,
    MaintenanceResult,
)

log = structlog.get_logger(__name__)
DAY = 86_400.0
ARCHIVE_BATCH = 5_000


async def _columns(conn: AsyncConnection, table: str) -> set[str]:
    rows = await conn.execute(
        sa.text(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = :t"
        ),
        {"t": table},
    )
    return {r[0] for r in rows}


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


@dataclass
class MaintenanceActivities:
    engine: AsyncEngine
    settings: Settings

    @activity.defn(name=EXPIRE_SHORT_TERM_MEMORY_ACTIVITY)
    async def expire_short_term_memory(self, inp: MaintenanceInput) -> MaintenanceResult:
        ttl = inp.older_than_secs if inp.older_than_secs is not None else self.settings.short_term_ttl_hours * 3600
        async with self.engine.begin() as conn:
            cols = await _columns(conn, "short_term_memory")
            if not cols:
                return MaintenanceResult(skipped="table short_term_memory does not exist")
            if "expires_at" in cols:  # rows carry their own expiry
                where = "expires_at IS NOT NULL AND expires_at < now()"
            elif "created_at" in cols:
                where = "created_at < now() - make_interval(secs => :age)"
            else:
                return MaintenanceResult(skipped="short_term_memory has no created_at/expires_at column")
            res = await conn.execute(sa.text(f"DELETE FROM short_term_memory WHERE {where}"), {"age": ttl})
        log.info("short_term_memory_expired", deleted=res.rowcount)
        return MaintenanceResult(deleted=res.rowcount or 0)

    @activity.defn(name=ARCHIVE_AUDIT_LOG_ACTIVITY)
    async def archive_audit_log(self, inp: MaintenanceInput) -> MaintenanceResult:
        age = inp.older_than_secs if inp.older_than_secs is not None else self.settings.audit_retention_days * DAY
        info = activity.info()
        out_dir = self.settings.data_dir / "archive" / "audit_log"
        out = out_dir / f"audit_log-{info.workflow_run_id}.jsonl"
        archived = deleted = 0
        async with self.engine.begin() as conn:
            cols = await _columns(conn, "audit_log")
            if not cols:
                return MaintenanceResult(skipped="table audit_log does not exist")
            # core/schema.py names it `at`; older layouts used `created_at`.
            ts = next((c for c in ("at", "created_at") if c in cols), None)
            if ts is None or "id" not in cols:
                return MaintenanceResult(skipped="audit_log has no id/at column")
        await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
        while True:  # batches: copy to the file (fsync'd), then delete exactly those ids
            async with self.engine.begin() as conn:
                rows = (
                    await conn.execute(
                        sa.text(
                            f"SELECT * FROM audit_log WHERE {ts} < now() - make_interval(secs => :age) "
                            "ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                        ),
                        {"age": age, "n": ARCHIVE_BATCH},
                    )
                ).mappings().all()
                if not rows:
                    break
                lines = "".join(json.dumps(dict(r), default=_json_default) + "\n" for r in rows)
                await asyncio.to_thread(_append_durably, out, lines)
                res = await conn.execute(
                    sa.text("DELETE FROM audit_log WHERE id = ANY(:ids)"), {"ids": [r["id"] for r in rows]}
                )
                archived += len(rows)
                deleted += res.rowcount or 0
            activity.heartbeat(archived)
        log.info("audit_log_archived", archived=archived, file=str(out) if archived else None)
        return MaintenanceResult(archived=archived, deleted=deleted, archive_file=str(out) if archived else "")

    @activity.defn(name=PURGE_API_KEYS_ACTIVITY)
    async def purge_api_keys(self, inp: MaintenanceInput) -> MaintenanceResult:
        grace = inp.older_than_secs if inp.older_than_secs is not None else self.settings.key_purge_grace_days * DAY
        async with self.engine.begin() as conn:
            res = await conn.execute(
                sa.text(
                    "DELETE FROM api_keys WHERE revoked_at < now() - make_interval(secs => :g) "
                    "OR expires_at < now() - make_interval(secs => :g)"
                ),
                {"g": grace},
            )
        log.info("api_keys_purged", deleted=res.rowcount)
        return MaintenanceResult(deleted=res.rowcount or 0)

    def all(self) -> list[Any]:
        return [self.expire_short_term_memory, self.archive_audit_log, self.purge_api_keys]


def _append_durably(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
