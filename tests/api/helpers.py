"""Helpers for the API tests: serve an app over a real socket, read SSE, mint JWTs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import uvicorn
from fastapi import FastAPI


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run `app` (its lifespan already entered by the caller) with uvicorn on 127.0.0.1:<free
    port> in this event loop; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 20
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=20)


@dataclass
class SSE:
    id: str | None
    event: str | None
    data: Any


async def read_sse(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], *, max_events: int | None = None,
    deadline_secs: float = 60, deltas: bool = False, until: Callable[[SSE], bool] | None = None,
    connected: asyncio.Event | None = None,
) -> list[SSE]:
    """Read events until the server ends the stream (or `max_events` were read, or `until` an
    event, then hang up). Live `step.delta` events are kept only with `deltas=True`.
    `connected` is set once the stream is open (the server has answered 200)."""
    out: list[SSE] = []
    async with asyncio.timeout(deadline_secs), client.stream("GET", url, headers=headers) as resp:
        assert resp.status_code == 200, await resp.aread()
        assert resp.headers["content-type"].startswith("text/event-stream")
        if connected is not None:
            connected.set()
        fields: dict[str, str] = {}
        async for line in resp.aiter_lines():
            if line == "":
                if ("data" in fields or "event" in fields) and (deltas or fields.get("event") != "step.delta"):
                    out.append(SSE(fields.get("id"), fields.get("event"), json.loads(fields.get("data", "null"))))
                    if max_events is not None and len(out) >= max_events:
                        break
                    if until is not None and until(out[-1]):
                        break
                fields = {}
                continue
            if line.startswith(":"):
                continue  # comment / ping
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    return out


def hs256(secret: str, sub: str, *, scope: str = "tasks:read tasks:write", exp_in: float = 300,
          jti: str | None = None, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": sub, "scope": scope, "jti": jti or uuid.uuid4().hex, **claims}
    if exp_in is not None:
        payload["exp"] = int(time.time() + exp_in)
    return jwt.encode(payload, secret, algorithm="HS256")
