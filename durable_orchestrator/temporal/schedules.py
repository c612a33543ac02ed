"""Temporal Schedules for the maintenance workflows, created (or brought up to date) on worker
start. Visible in the Web UI (Schedules) and `temporal schedule list`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from durable_orchestrator.settings import Settings
from durable_orchestrator.temporal.contracts import (
    ARCHIVE_AUDIT_LOG,
    EXPIRE_SHORT_TERM_MEMORY,
    PURGE_API_KEYS,
    MaintenanceInput,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Job:
    schedule_id: str
    workflow: str
    every: timedelta
    note: str


JOBS = [
    Job("maintenance-expire-short-term-memory", EXPIRE_SHORT_TERM_MEMORY, timedelta(hours=1),
        "delete short-term memory older than ORCH_SHORT_TERM_TTL_HOURS"),
    Job("maintenance-archive-audit-log", ARCHIVE_AUDIT_LOG, timedelta(days=1),
        "archive audit_log rows older than ORCH_AUDIT_RETENTION_DAYS to JSONL, then delete"),
    Job("maintenance-purge-api-keys", PURGE_API_KEYS, timedelta(days=1),
        "delete expired/revoked API keys older than ORCH_KEY_PURGE_GRACE_DAYS"),
]


def _schedule(job: Job, task_queue: str) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            job.workflow,
            MaintenanceInput(),
            # The schedule appends the scheduled time, so each run has its own id.
            id=job.schedule_id,
            task_queue=task_queue,
            execution_timeout=timedelta(hours=1),
            static_summary=job.note,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=job.every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=job.every),
    )


async def ensure_schedules(client: Client, settings: Settings) -> list[str]:
    """Create each schedule, or update it in place when it exists. Safe from N workers at once."""
    ids = []
    for job in JOBS:
        schedule = _schedule(job, settings.task_queue)
        try:
            await client.create_schedule(job.schedule_id, schedule)
            log.info("schedule_created", schedule_id=job.schedule_id)
        except ScheduleAlreadyRunningError:

            def update(_: ScheduleUpdateInput, s: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=s)

            await client.get_schedule_handle(job.schedule_id).update(update)
        ids.append(job.schedule_id)
    return ids
