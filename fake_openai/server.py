"""The fake OpenAI Chat Completions server: the HTTP app and its lifecycle.

Why a real server instead of mocking the SDK: retries, timeouts, Retry-After handling,
connection errors and token accounting all live in the ``openai``/``httpx`` stack, so the
only honest way to exercise them is over a socket with the genuine client. Tests run the
server in-process on a background thread (``with FakeOpenAI() as fake: ...``); benchmarks
run ``python -m fake_openai`` as a subprocess so its CPU does not pollute the measured process.

What a request gets, in order:

1. ``latency`` (every chat request, an asyncio wait so concurrent requests overlap);
2. a probabilistic fault from ``faults`` (:mod:`fake_openai.faults`);
3. the next scripted :class:`~fake_openai.replies.Reply` (a queue for the request's model
   first, then the model-agnostic queue), waiting behind its ``hold`` until the test
   releases it;
4. ``responder(body)`` if set;
5. the default: a valid plan for a plan request (:mod:`fake_openai.plans`), otherwise
   ``"fake answer: <first 80 chars of the last user message>"``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fake_openai.faults import (
    MALFORMED_BODY,
    DropConnection,
    FaultRoller,
    Faults,
    tracking_protocol,
)
from fake_openai.replies import Hold, RecordedRequest, Reply, Responder, Script
from fake_openai.streaming import ChunkStream
from fake_openai.wire import DEFAULT_MODEL, completion, error_response


class FakeOpenAI:
    """The fake server. ``start()``/``stop()`` or use as a context manager.

    ``latency``, ``faults`` and ``responder`` may be changed while it runs; the script
    queue and recorded requests are guarded by locks because the server thread and the
    test thread both touch them. ``responder`` runs on the server's event-loop thread, so it
    must be quick and must not block; returning None from it falls back to the default.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        self.latency = latency
        # False answers `stream: true` with a 400, as some OpenAI-compatible servers do.
        self.supports_streaming = True
        self.host = host
        self.port = port
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._script = Script()
        self._roller = FaultRoller(faults or Faults())
        self._call_ids = itertools.count(1)
        self._completion_ids = itertools.count(1)
        self._models_seen: dict[str, None] = {DEFAULT_MODEL: None}
        self._transports: dict[Any, Any] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/healthz", self._healthz, methods=["GET"]),
            ]
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        """Serve on a daemon thread with its own event loop; return once accepting."""
        if self._thread is not None:
            raise RuntimeError("FakeOpenAI already started")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            loop="asyncio",
            http=tracking_protocol(self._transports),
            lifespan="off",
            backlog=2048,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._stopping = asyncio.Event()
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake OpenAI server failed to start")
            time.sleep(0.005)
        self.base_url = f"http://{_url_host(self.host)}:{self.port}/v1"
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit (in-flight requests get ~1 s) and join its thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # Wake requests sleeping in latency/delay so they drop their connection now
            # instead of being cancelled (and logged) by uvicorn's graceful-shutdown timeout.
            try:
                loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:  # loop closed in the meantime
                pass
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._server = None
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- test-facing API ------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._roller.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        """Replacing the faults also reseeds the fault RNG, so runs are repeatable."""
        self._roller = FaultRoller(value)

    @property
    def responder(self) -> Responder | None:
        return self._script.responder

    @responder.setter
    def responder(self, value: Responder | None) -> None:
        self._script.responder = value

    def script(self, *replies: Reply, model: str | None = None) -> None:
        """Queue replies, consumed FIFO; with ``model`` only by requests for that model."""
        self._script.add(replies, model)

    def pending(self, model: str | None = None) -> int:
        """How many scripted replies for ``model`` (None: the shared queue) are unused."""
        return self._script.pending(model)

    def reset(self) -> None:
        """Clear script, faults, recorded requests and responder; streaming back on (latency is kept)."""
        self.faults = Faults()
        self.supports_streaming = True
        self._script.clear()
        with self._lock:
            self.requests.clear()
            self._call_ids = itertools.count(1)

    def successful_usage(self) -> tuple[int, int]:
        """(prompt, completion) token sums over the 200 responses actually sent."""
        with self._lock:
            done = [r.usage for r in self.requests if r.status == 200 and r.usage is not None]
        return sum(u["prompt_tokens"] for u in done), sum(u["completion_tokens"] for u in done)

    # -- request handling -----------------------------------------------------------------

    def _finish(
        self, record: RecordedRequest, status: int | None, usage: dict[str, int] | None = None
    ) -> None:
        with self._lock:
            record.status = status
            record.usage = usage
            record.responded_monotonic = time.monotonic()

    async def _pause(self, seconds: float) -> bool:
        """Wait without blocking the loop; False if the server is stopping meanwhile."""
        if self._stopping.is_set():
            return False
        if seconds <= 0:
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return True
        return False

    async def _held(self, hold: Hold, request: Request) -> bool:
        """Wait for the test to release ``hold``; False if the server stops or the client goes
        away meanwhile (asking also resumes reading, so a closed connection is noticed: a
        client killed while held never gets an answer, however soon the hold is released)."""
        hold._arrive()
        while not hold.released:
            if self._stopping.is_set() or await request.is_disconnected():
                return False
            await asyncio.sleep(0.02)
        return True

    async def _chat(self, request: Request) -> Response:
        received_monotonic, received_at = time.monotonic(), time.time()
        self._loop = asyncio.get_running_loop()
        try:
            parsed = json.loads(await request.body())
        except ValueError:
            parsed = None
        body = parsed if isinstance(parsed, dict) else None
        model = (
            body.get("model") if body is not None and isinstance(body.get("model"), str) else None
        )
        record = RecordedRequest(
            body=body,
            model=model,
            received_monotonic=received_monotonic,
            received_at=received_at,
            headers=dict(request.headers),
        )
        with self._lock:
            self.requests.append(record)
            if model is not None:
                self._models_seen.setdefault(model, None)
        if not await self._pause(self.latency):
            self._finish(record, None)
            return DropConnection(self._transports)
        if body is None:
            self._finish(record, 400)
            return error_response(400, "Request body must be a JSON object.", None)
        streamed = bool(body.get("stream"))
        if streamed and not self.supports_streaming:
            self._finish(record, 400)
            return error_response(400, "This endpoint does not support stream=true.", None)

        reply, extra_delay, record.fault = self._roller.roll(model)
        if reply is None:
            reply = self._script.next(body, model)
        if reply.hold is not None and not await self._held(reply.hold, request):
            self._finish(record, None)
            return DropConnection(self._transports)
        if not await self._pause(extra_delay + reply.delay) or reply.drop:
            self._finish(record, None)
            return DropConnection(self._transports)
        if await request.is_disconnected():  # the client gave up; nothing will be delivered
            self._finish(record, None)
            return Response(status_code=499)
        if reply.malformed:
            self._finish(record, 200)
            return Response(
                MALFORMED_BODY,
                status_code=200,
                media_type="application/json",
                headers=reply.headers,
            )
        if reply.status != 200:
            self._finish(record, reply.status)
            return error_response(reply.status, reply.content, reply.headers)

        payload = completion(
            body,
            model or DEFAULT_MODEL,
            reply,
            completion_id=next(self._completion_ids),
            call_ids=self._call_ids,
        )
        if streamed:
            record.streamed = True
            return ChunkStream(
                payload, reply, record,
                include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
                pause=self._pause, finish=self._finish, transports=self._transports,
            )
        self._finish(record, 200, payload["usage"])
        return JSONResponse(payload, headers=reply.headers)

    async def _models(self, request: Request) -> Response:
        with self._lock:
            names = list(self._models_seen)
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": "fake-openai"} for n in names
        ]
        return JSONResponse({"object": "list", "data": data})

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
