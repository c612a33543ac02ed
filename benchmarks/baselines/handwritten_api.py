"""API of the hand-written baseline: what a competent engineer writes with FastAPI and asyncpg for
the product's two hot requests, served the same way (`uvicorn
benchmarks.baselines.handwritten_api:app`, one process). Environment: HW_DB_URL,
HW_TEMPORAL_ADDRESS, HW_TASK_QUEUE.

- `POST /tasks {"description"}` checks the API key (a SHA-256 hash looked up in a table), inserts
  the task row and starts the hand-written workflow: 202 with the id.
- `GET /tasks/{id}` checks the key and reads the task in the same single query.

No middleware, tracing, metrics, rate limits, idempotency keys, budgets or per-step view: the
floor an API of this shape can reach on the machine, not a competitor."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, Field
from temporalio.client import Client

from benchmarks.baselines.handwritten_workflow import HANDWRITTEN_WORKFLOW, PlanInput
from benchmarks.db import libpq_url

SCHEMA = """
CREATE TABLE IF NOT EXISTS hwa_keys (key_hash text PRIMARY KEY, user_id text NOT NULL);
CREATE TABLE IF NOT EXISTS hwa_tasks (
    id text PRIMARY KEY,
    user_id text NOT NULL,
    description text NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

_INSERT = """
INSERT INTO hwa_tasks (id, user_id, description, status)
SELECT $1, user_id, $2, 'pending' FROM hwa_keys WHERE key_hash = $3
RETURNING id
"""
_READ = """
SELECT json_build_object('id', t.id, 'status', t.status, 'description', t.description,
                         'created_at', t.created_at)::text
FROM hwa_tasks t JOIN hwa_keys k ON k.user_id = t.user_id
WHERE t.id = $1 AND k.key_hash = $2
"""

state: dict[str, Any] = {}


async def add_key(conn: asyncpg.Connection, key: str, user_id: str) -> None:
    await conn.execute(SCHEMA)
    await conn.execute("INSERT INTO hwa_keys VALUES ($1, $2) ON CONFLICT DO NOTHING", _hash(key), user_id)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    state["pool"] = await asyncpg.create_pool(libpq_url(os.environ["HW_DB_URL"]), min_size=2, max_size=10)
    state["temporal"] = await Client.connect(os.environ["HW_TEMPORAL_ADDRESS"])
    state["queue"] = os.environ["HW_TASK_QUEUE"]
    try:
        yield
    finally:
        await state["pool"].close()


app = FastAPI(lifespan=lifespan)


class TaskIn(BaseModel):
    description: str = Field(min_length=1, max_length=20_000)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/tasks", status_code=202)
async def submit(body: TaskIn, x_api_key: Annotated[str, Header()]) -> dict[str, str]:
    task_id = uuid.uuid4().hex
    if await state["pool"].fetchval(_INSERT, task_id, body.description, _hash(x_api_key)) is None:
        raise HTTPException(401, "invalid API key")
    await state["temporal"].start_workflow(
        HANDWRITTEN_WORKFLOW, PlanInput(task_id, body.description), id=f"hwa-{task_id}",
        task_queue=state["queue"],
    )
    return {"id": task_id, "status": "pending"}


@app.get("/tasks/{task_id}")
async def read(task_id: str, x_api_key: Annotated[str, Header()]) -> Response:
    body = await state["pool"].fetchval(_READ, task_id, _hash(x_api_key))
    if body is None:
        raise HTTPException(404, "no such task")
    return Response(body, media_type="application/json")
