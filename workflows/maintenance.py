"""Maintenance workflows, started by Temporal Schedules (see durable_orchestrator/temporal/schedules.py):

- ExpireShortTermMemory (hourly): delete short-term memory older than its TTL;
- ArchiveAuditLog (daily): copy old audit_log rows to JSONL in the data dir, then delete them;
- PurgeApiKeys (daily): delete expired and revoked API keys after a grace period.

Each is one activity with a retry policy; the workflow only schedules it."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from durable_orchestrator.temporal.contracts import (
        ARCHIVE_AUDIT_LOG,
        ARCHIVE_AUDIT_LOG_ACTIVITY,
        EXPIRE_SHORT_TERM_MEMORY,
        EXPIRE_SHORT_TERM_MEMORY_ACTIVITY,
        PURGE_API_KEYS,
        PURGE_API_KEYS_ACTIVITY,
        MaintenanceInput,
        MaintenanceResult,
    )

_TIMEOUT = timedelta(minutes=10)
_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=5)


async def _run(activity_name: str, inp: MaintenanceInput, summary: str) -> MaintenanceResult:
    workflow.set_current_details(summary)
    return await workflow.execute_activity(
        activity_name,
        inp,
        result_type=MaintenanceResult,
        start_to_close_timeout=_TIMEOUT,
        heartbeat_timeout=timedelta(minutes=2),
        retry_policy=_RETRY,
        summary=summary,
    )


@workflow.defn(name=EXPIRE_SHORT_TERM_MEMORY)
class ExpireShortTermMemory:
    @workflow.run
    async def run(self, inp: MaintenanceInput) -> MaintenanceResult:
        return await _run(EXPIRE_SHORT_TERM_MEMORY_ACTIVITY, inp, "expire short-term memory")


@workflow.defn(name=ARCHIVE_AUDIT_LOG)
class ArchiveAuditLog:
    @workflow.run
    async def run(self, inp: MaintenanceInput) -> MaintenanceResult:
        return await _run(ARCHIVE_AUDIT_LOG_ACTIVITY, inp, "archive audit log")


@workflow.defn(name=PURGE_API_KEYS)
class PurgeApiKeys:
    @workflow.run
    async def run(self, inp: MaintenanceInput) -> MaintenanceResult:
        return await _run(PURGE_API_KEYS_ACTIVITY, inp, "purge api keys")


MAINTENANCE_WORKFLOWS = [ExpireShortTermMemory, ArchiveAuditLog, PurgeApiKeys]
