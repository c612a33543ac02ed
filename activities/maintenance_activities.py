"""Activities of the maintenance workflows. Each is safe to run again (deletes are by age;
the audit archive writes a file per run id before deleting exactly the rows it wrote)."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from durable_orchestrator.data import maintenance
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
        """Entries carry their own expiry, set from ORCH_SHORT_TERM_TTL_HOURS when written, so
        `older_than_secs` does not apply here."""
        deleted = await maintenance.expire_short_term(self.engine)
        log.info("short_term_memory_expired", deleted=deleted)
        return MaintenanceResult(deleted=deleted)

    @activity.defn(name=ARCHIVE_AUDIT_LOG_ACTIVITY)
    async def archive_audit_log(self, inp: MaintenanceInput) -> MaintenanceResult:
        age = inp.older_than_secs if inp.older_than_secs is not None else self.settings.audit_retention_days * DAY
        info = activity.info()
        out_dir = self.settings.data_dir / "archive" / "audit_log"
        out = out_dir / f"audit_log-{info.workflow_run_id}.jsonl"
        archived = deleted = 0
        await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
        while True:  # batches: copy to the file (fsync'd), then delete exactly those ids
            async with self.engine.begin() as conn:
                rows = await maintenance.lock_old_audit_rows(conn, timedelta(seconds=age), ARCHIVE_BATCH)
                if not rows:
                    break
                lines = "".join(json.dumps(r, default=_json_default) + "\n" for r in rows)
                await asyncio.to_thread(_append_durably, out, lines)
                deleted += await maintenance.delete_audit_rows(conn, [r["id"] for r in rows])
                archived += len(rows)
            activity.heartbeat(archived)
        log.info("audit_log_archived", archived=archived, file=str(out) if archived else None)
        return MaintenanceResult(archived=archived, deleted=deleted, archive_file=str(out) if archived else "")

    @activity.defn(name=PURGE_API_KEYS_ACTIVITY)
    async def purge_api_keys(self, inp: MaintenanceInput) -> MaintenanceResult:
        grace = inp.older_than_secs if inp.older_than_secs is not None else self.settings.key_purge_grace_days * DAY
        deleted = await maintenance.purge_api_keys(self.engine, timedelta(seconds=grace))
        log.info("api_keys_purged", deleted=deleted)
        return MaintenanceResult(deleted=deleted)

    def all(self) -> list[Any]:
        return [self.expire_short_term_memory, self.archive_audit_log, self.purge_api_keys]


def _append_durably(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
