"""The Temporal worker: runs TaskWorkflow and its activities.

Worker-scoped resources (DB pool, LLM client, embedding model) are built once here and handed
to the activity classes; background loops (reconciler, memory writer) run beside the worker. Run with `python -m worker` (or via `orchestrator up`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import workflows
from activities.maintenance_activities import MaintenanceActivities
from activities.task_activities import TaskActivities
from activities.tool_activities import ToolActivities
from activities.webhook_activities import WebhookActivities
from durable_orchestrator.data import tool_catalog
from durable_orchestrator.data.engine import create_engine
from durable_orchestrator.live.publisher import make_publisher
from durable_orchestrator.llm.budget import warm_up
from durable_orchestrator.llm.instrumented import InstrumentedLLM
from durable_orchestrator.llm.providers import make_llm_client
from durable_orchestrator.llm.router import LLMRouter
from durable_orchestrator.mcp_tools.config import catalog_freshness_secs
from durable_orchestrator.mcp_tools.servers import McpServers, catalog_row
from durable_orchestrator.outbound import checked_client
from durable_orchestrator.settings import Settings, get_settings
from durable_orchestrator.telemetry import metrics
from durable_orchestrator.telemetry.logs import configure_logging
from durable_orchestrator.telemetry.tracing import setup_tracing, tracing_interceptors
from durable_orchestrator.temporal.bytecode import ensure_bytecode
from durable_orchestrator.temporal.client import connect, metrics_runtime
from durable_orchestrator.temporal.reconciler import start_reconciler, stop_reconciler
from durable_orchestrator.temporal.schedules import ensure_schedules
from durable_orchestrator.tools import REGISTRY, Tool, ToolRegistry
from memory.service import MemoryService
from memory.writer import start_memory_writer, stop_memory_writer
from planner.agents import AGENTS
from workflows.maintenance import MAINTENANCE_WORKFLOWS
from workflows.task_workflow import TaskWorkflow

log = structlog.get_logger(__name__)

# On SIGTERM, running activities get this long to finish; deployments wait longer before
# killing the process (compose stop_grace_period, Kubernetes terminationGracePeriodSeconds).
SHUTDOWN_GRACE = timedelta(seconds=30)

WORKFLOWS = [TaskWorkflow, *MAINTENANCE_WORKFLOWS]


@contextlib.asynccontextmanager
async def build_worker(
    settings: Settings, client: Client, *, task_queue: str | None = None
) -> AsyncIterator[Worker]:
    """A ready-to-run worker plus the resources it owns; closed on exit. Tests use this too."""
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; run `orchestrator up` or set DATABASE_URL")
    if settings.workflow_sandbox:
        ensure_bytecode(workflows)  # the sandbox imports these for every workflow run
    engine = create_engine(settings.database_url, pool_size=20)
    try:
        tools, mcp = await _tool_registry(settings, engine)
    except BaseException:
        await engine.dispose()
        raise
    # Breakers, shared rate limits and the fallback chain wrap the provider client;
    # spans and metrics sit inside them, so each model actually tried is measured.
    # Prices and tokenizers load here, off the event loop; a broken ORCH_PRICES_FILE stops the
    # worker now rather than failing tasks.
    await asyncio.to_thread(warm_up, settings, [a.model for a in AGENTS.values() if a.model])
    instrumented = InstrumentedLLM(
        make_llm_client(settings), prices_file=settings.prices_file, log_prompts=settings.log_prompts
    )
    llm = LLMRouter.from_settings(instrumented, engine, settings)
    memory = MemoryService(engine, settings)  # embedding model + FAISS cache, once per process
    memory.start_background()
    deltas = make_publisher(settings, engine)
    acts = TaskActivities(engine=engine, llm=llm, settings=settings, memory=memory, tools=tools,
                          deltas=deltas, temporal=client)

    async def memory_search(user_id: str, query: str, limit: int) -> list[dict[str, Any]]:
        return [hit.as_dict() for hit in await memory.search(user_id, query, limit)]

    tool_acts = ToolActivities(engine=engine, settings=settings, memory_search=memory_search, tools=tools)
    webhook_http = checked_client(
        private_hosts=settings.webhook_private_hosts, timeout=settings.webhook_timeout_secs
    )
    hooks = WebhookActivities(engine=engine, settings=settings, http=webhook_http)
    # Rows and workflows of this queue kept in agreement (durable_orchestrator/temporal/reconciler.py).
    reconciler = start_reconciler(
        client, engine, settings.model_copy(update={"task_queue": task_queue}) if task_queue else settings
    )
    # Completed tasks' results, queued with their completion, embedded into memories in batches.
    memory_writer = start_memory_writer(memory, settings)
    try:
        yield Worker(
            client,
            task_queue=task_queue or settings.task_queue,
            workflows=WORKFLOWS,
            # The sandbox compiles and runs code of its own on every activation; the tests run the
            # workflows in it instead (docs/benchmarks.md, "Workflow sandbox").
            **({} if settings.workflow_sandbox else {"workflow_runner": UnsandboxedWorkflowRunner()}),
            activities=[
                acts.plan_task, acts.run_step, acts.finish_task, acts.take_slot, tool_acts.run_tool,
                hooks.send_webhook,
                *MaintenanceActivities(engine=engine, settings=settings).all(),
            ],
            max_concurrent_activities=500,
            max_concurrent_workflow_tasks=100,
            graceful_shutdown_timeout=SHUTDOWN_GRACE,
            # Tracing: inherited from the client when it has the interceptor, else added here.
            interceptors=[] if _has_tracing(client) else tracing_interceptors(),
            # Heartbeats reach the server at least every 2 s, so cancellation (API, CLI, task
            # deadline) interrupts a running LLM call within seconds, not 0.8 x heartbeat timeout.
            max_heartbeat_throttle_interval=timedelta(seconds=2),
            default_heartbeat_throttle_interval=timedelta(seconds=2),
        )
    finally:
        await stop_memory_writer(memory_writer)
        await stop_reconciler(reconciler)
        if mcp is not None:
            await mcp.close()
        await webhook_http.aclose()
        await deltas.close()
        await memory.close()
        await llm.close()
        await engine.dispose()


async def _tool_registry(settings: Settings, engine: Any) -> tuple[ToolRegistry, McpServers | None]:
    """The built-ins, plus the MCP servers' tools when servers are configured (each worker
    connects to them itself and records what it registered for `GET /tools`)."""
    try:
        await tool_catalog.delete_stale(engine, catalog_freshness_secs(settings))
    except Exception as exc:  # housekeeping only
        log.warning("tool_catalog_cleanup_failed", error=str(exc))
    if not settings.mcp_servers:
        return REGISTRY, None
    tools = REGISTRY.layered()

    async def publish(origin: str, registered: list[Tool]) -> None:
        try:
            await tool_catalog.replace_origin(engine, origin, [catalog_row(t) for t in registered])
        except Exception as exc:  # the tools still work; only GET /tools is behind
            log.warning("tool_catalog_write_failed", origin=origin, error=str(exc))

    mcp = McpServers(
        settings.mcp_servers, tools, known_agents=AGENTS,
        connect_timeout_secs=settings.mcp_connect_timeout_secs,
        refresh_interval_secs=settings.mcp_refresh_interval_secs,
        max_result_chars=settings.mcp_max_result_chars, publish=publish,
    )
    await mcp.start()
    log.info("mcp_servers_started", servers=mcp.status())
    return tools, mcp


def _has_tracing(client: Client) -> bool:
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return any(isinstance(i, TracingInterceptor) for i in client.config()["interceptors"])


def _lower_cpu_priority(by: int) -> None:
    """Linux keeps a nice value per thread, and a new thread takes its creator's: every thread
    there is now (a library starts one at import) is lowered, and the ones started later
    (Temporal's core, the embedder's, the metrics server's) follow."""
    nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + by)
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: there the whole process is one priority
        threads = [0]
    for tid in threads:
        os.setpriority(os.PRIO_PROCESS, tid, nice)


async def main() -> None:
    settings = get_settings()
    if settings.worker_nice:
        _lower_cpu_priority(settings.worker_nice)
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
        log.info(
            "worker_started", task_queue=settings.task_queue,
            llm="offline" if settings.use_offline_llm else "openai",
            event_loop=type(loop).__module__.split(".")[0],
        )
        await asyncio.wait([run, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            # Stop polling, let running activities finish within the grace period.
            log.info("worker_stopping")
            await worker.shutdown()
        await run


def run() -> None:
    """uvloop's event loop where it is installed (it comes with uvicorn[standard], as for the
    API): measured 12% less worker CPU per task and 11% more tasks/s than asyncio's own loop
    (benchmarks.profile, 100 tasks, three runs each), most of it in socket writes to PostgreSQL
    and the LLM and the loop's own bookkeeping. Workflows are unaffected: Temporal runs them on
    its own deterministic loop."""
    try:
        import uvloop
    except ImportError:  # Windows: uvloop does not exist there
        asyncio.run(main())
    else:
        uvloop.run(main())


if __name__ == "__main__":
    run()
