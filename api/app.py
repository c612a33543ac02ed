"""The FastAPI application factory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from api import openapi_doc
from api.errors import install_error_handlers
from api.http_metrics import TELEMETRY, install_observability
from api.middleware import BodySizeLimit, RequestContext
from api.routes import admin, agents, approvals, events, health, reruns, tasks, usage
from api.routes import memory as memory_routes
from api.routes import tools as tools_routes
from durable_orchestrator.auth.key_cache import KeyCache
from durable_orchestrator.data.engine import create_engine
from durable_orchestrator.live.hub import DeltaHub
from durable_orchestrator.settings import Settings, get_settings
from durable_orchestrator.telemetry.logs import configure_logging
from durable_orchestrator.telemetry.tracing import setup_tracing
from durable_orchestrator.temporal.client import connect
from memory.service import MemoryService

DESCRIPTION = """Submit a task; a planner splits it into steps for specialised agents; the plan
runs durably as a Temporal workflow; progress and results are read from Postgres.

Authenticate with `X-API-Key` (create one with `orchestrator keys create --user NAME`) or,
when the server is configured for it, `Authorization: Bearer <JWT>`.
Every error has the shape `{"error": {"code", "message", "details"}}`; every response carries
`X-Request-ID` (yours, or a generated one). Task submission is rate limited per key
(`X-RateLimit-*` headers, 429 with `Retry-After`)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set; run `orchestrator up` or set it")
        app.state.engine = create_engine(settings.database_url)
        app.state.key_cache = KeyCache(settings.auth_key_cache_secs)
        app.state.temporal = await connect(settings)
        # Long-term memory: one service (model + FAISS cache) per process. The index is warmed in
        # the background; the model only on request, since most API processes never embed (the
        # worker embeds task memories, and its start makes the model's ONNX export that this
        # process loads; one that finds none makes it first, in a child: ~10 s of CPU).
        app.state.memory = MemoryService(app.state.engine, settings, short_texts=True)
        app.state.memory.start_background(load_model=settings.api_preload_embedding_model)
        app.state.deltas = DeltaHub(settings)
        try:
            yield
        finally:
            await app.state.deltas.close()
            await app.state.memory.close()
            await app.state.engine.dispose()

    app = FastAPI(
        title="Durable Agent Orchestrator",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=TELEMETRY,
        openapi_tags=[
            {"name": "tasks", "description": "Submit tasks and follow them"},
            {"name": "agents", "description": "The agents a task's steps may be given to"},
            {"name": "approvals", "description": "Approve or reject tool calls that need a human"},
            {"name": "usage", "description": "Token usage and cost from the ledger"},
            {"name": "events", "description": "A task's events as Server-Sent Events"},
            {"name": "admin", "description": "Operator actions (scope `admin`)"},
            {"name": "health", "description": "Liveness and readiness"},
            {"name": "memory", "description": "Long-term memory: remember, search by meaning, forget"},
            {"name": "tools", "description": "Tools the agents may call: built-in and from MCP servers"},
        ],
    )
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)  # outermost of ours: even a 413 gets X-Request-ID
    install_error_handlers(app)
    install_observability(app)
    app.include_router(tasks.router)
    app.include_router(reruns.router)
    app.include_router(agents.router)
    app.include_router(approvals.router)
    app.include_router(usage.router)
    app.include_router(events.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(memory_routes.router)
    app.include_router(tools_routes.router)
    openapi_doc.apply_settings(app, settings)
    return app


def main_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json, log_prompts=settings.log_prompts)
    setup_tracing("orchestrator-api")
    return create_app(settings)
