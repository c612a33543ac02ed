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

from activities.memory_activities import MemoryActivities
from activities.task_activities import TaskActivities
from core.db import create_engine
from core.llm import make_llm_client
from core.logging import configure_logging
from core.settings import Settings, get_settings
from core.temporal import connect
from memory.service import MemoryService
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
    llm = make_llm_client(settings)
    memory = MemoryService(engine, settings)  # embedding model + FAISS cache, once per process
    memory.start_background()
    acts = TaskActivities(engine=engine, llm=llm, settings=settings, memory=memory)
    memory_acts = MemoryActivities(memory=memory, settings=settings)
    try:
        yield Worker(
            client,
            task_queue=task_queue or settings.task_queue,
            workflows=WORKFLOWS,
            activities=[acts.plan_task, acts.run_step, acts.finish_task, memory_acts.remember_result],
            max_concurrent_activities=500,
            max_concurrent_workflow_tasks=100,
            graceful_shutdown_timeout=timedelta(seconds=30),
        )
    finally:
        await memory.close()
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
