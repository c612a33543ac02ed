"""The Temporal worker: runs TaskWorkflow and its activities.

Worker-scoped resources (DB pool, LLM client) are built once here and handed to the activity
classes. Run with `python -m worker` (or via `orchestrator up`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from datetime import timedelta

import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from activities.task_activities import TaskActivities
from core.db import create_engine
from core.llm import make_llm_client
from core.llm_router import LLMRouter
from core.logging import configure_logging
from core.settings import Settings, get_settings
from core.temporal import connect
from workflows.task_workflow import TaskWorkflow

log = structlog.get_logger(__name__)

WORKFLOWS = [TaskWorkflow]


@contextlib.asynccontextmanager
async def build_worker(
    settings: Settings, client: Client, *, task_queue: str | None = None
) -> AsyncIterator[Worker]:
    """A ready-to-run worker plus the resources it owns; closed on exit. Tests use this too."""
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; run `orchestrator up` or set DATABASE_URL")
    engine = create_engine(settings.database_url, pool_size=20)
    # Breakers, shared rate limits and the fallback chain wrap the provider client (issue 4).
    llm = LLMRouter.from_settings(make_llm_client(settings), engine, settings)
    acts = TaskActivities(engine=engine, llm=llm, settings=settings)
    try:
        yield Worker(
            client,
            task_queue=task_queue or settings.task_queue,
            workflows=WORKFLOWS,
            activities=[acts.plan_task, acts.run_step, acts.finish_task],
            max_concurrent_activities=500,
            max_concurrent_workflow_tasks=100,
            graceful_shutdown_timeout=timedelta(seconds=30),
            # Heartbeats reach the server at least every 2 s, so cancellation (API, CLI, task
            # deadline) interrupts a running LLM call within seconds, not 0.8 x heartbeat timeout.
            max_heartbeat_throttle_interval=timedelta(seconds=2),
            default_heartbeat_throttle_interval=timedelta(seconds=2),
        )
    finally:
        await llm.close()
        await engine.dispose()


async def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    client = await connect(settings)
    async with build_worker(settings, client) as worker:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        run = asyncio.create_task(worker.run())
        log.info("worker_started", task_queue=settings.task_queue, llm="offline" if settings.use_offline_llm else "openai")
        await asyncio.wait([run, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            # Stop polling, let running activities finish within the grace period.
            log.info("worker_stopping")
            await worker.shutdown()
        await run


if __name__ == "__main__":
    asyncio.run(main())
