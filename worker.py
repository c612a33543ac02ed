"""The Temporal worker: runs TaskWorkflow and its activities.

Worker-scoped resources (DB pool, LLM client) are built once here and handed to the activity
classes. Run with `python -m worker` (or via `orchestrator up`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from activities.maintenance_activities import MaintenanceActivities
from activities.memory_activities import MemoryActivities
from activities.task_activities import TaskActivities
from activities.tool_activities import ToolActivities
from activities.webhook_activities import WebhookActivities
from durable_orchestrator.data.engine import create_engine
from durable_orchestrator.llm.instrumented import InstrumentedLLM
from durable_orchestrator.llm.providers import make_llm_client
from durable_orchestrator.llm.router import LLMRouter
from durable_orchestrator.settings import Settings, get_settings
from durable_orchestrator.telemetry import metrics
from durable_orchestrator.telemetry.logs import configure_logging
from durable_orchestrator.telemetry.tracing import setup_tracing, tracing_interceptors
from durable_orchestrator.temporal.client import connect, metrics_runtime
from durable_orchestrator.temporal.schedules import ensure_schedules
from memory.service import MemoryService
from workflows.maintenance import MAINTENANCE_WORKFLOWS
from workflows.task_workflow import TaskWorkflow

log = structlog.get_logger(__name__)

WORKFLOWS = [TaskWorkflow, *MAINTENANCE_WORKFLOWS]


@contextlib.asynccontextmanager
async def build_worker(
    settings: Settings, client: Client, *, task_queue: str | None = None
) -> AsyncIterator[Worker]:
    """A ready-to-run worker plus the resources it owns; closed on exit. Tests use this too."""
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; run `orchestrator up` or set DATABASE_URL")
    engine = create_engine(settings.database_url, pool_size=20)
    # Breakers, shared rate limits and the fallback chain wrap the provider client (issue 4);
    # spans and metrics sit inside them, so each model actually tried is measured.
    llm = LLMRouter.from_settings(InstrumentedLLM(make_llm_client(settings)), engine, settings)
    memory = MemoryService(engine, settings)  # embedding model + FAISS cache, once per process
    memory.start_background()
    acts = TaskActivities(engine=engine, llm=llm, settings=settings, memory=memory, temporal=client)
    memory_acts = MemoryActivities(memory=memory, settings=settings)

    async def memory_search(user_id: str, query: str, limit: int) -> list[dict[str, Any]]:
        return [hit.as_dict() for hit in await memory.search(user_id, query, limit)]

    tool_acts = ToolActivities(engine=engine, settings=settings, memory_search=memory_search)
    webhook_http = httpx.AsyncClient(timeout=settings.webhook_timeout_secs, follow_redirects=False)
    hooks = WebhookActivities(engine=engine, settings=settings, http=webhook_http)
    try:
        yield Worker(
            client,
            task_queue=task_queue or settings.task_queue,
            workflows=WORKFLOWS,
            activities=[
                acts.plan_task, acts.run_step, acts.finish_task, acts.take_slot, tool_acts.run_tool,
                hooks.send_webhook, memory_acts.remember_result,
                *MaintenanceActivities(engine=engine, settings=settings).all(),
            ],
            max_concurrent_activities=500,
            max_concurrent_workflow_tasks=100,
            graceful_shutdown_timeout=timedelta(seconds=30),
            # Tracing: inherited from the client when it has the interceptor, else added here.
            interceptors=[] if _has_tracing(client) else tracing_interceptors(),
            # Heartbeats reach the server at least every 2 s, so cancellation (API, CLI, task
            # deadline) interrupts a running LLM call within seconds, not 0.8 x heartbeat timeout.
            max_heartbeat_throttle_interval=timedelta(seconds=2),
            default_heartbeat_throttle_interval=timedelta(seconds=2),
        )
    finally:
        await webhook_http.aclose()
        await memory.close()
        await llm.close()
        await engine.dispose()


def _has_tracing(client: Client) -> bool:
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return any(isinstance(i, TracingInterceptor) for i in client.config()["interceptors"])


async def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json, log_prompts=settings.log_prompts)
    setup_tracing("orchestrator-worker")
    host = settings.metrics_bind_host
    if settings.worker_metrics_port is not None:
        metrics.serve(settings.worker_metrics_port, host)
        log.info("metrics_serving", address=f"{host}:{settings.worker_metrics_port}", kind="worker")
    runtime = None
    if settings.temporal_metrics_port is not None:
        runtime = metrics_runtime(f"{host}:{settings.temporal_metrics_port}")
        log.info("metrics_serving", address=f"{host}:{settings.temporal_metrics_port}", kind="temporal_sdk")
    client = await connect(settings, runtime=runtime)
    if settings.schedules:
        await ensure_schedules(client, settings)
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
