"""A fake OpenAI Chat Completions server that speaks real HTTP.

Why a real server instead of mocking the SDK: retries, timeouts, Retry-After handling,
connection errors and token accounting all live in the ``openai``/``httpx`` stack, so the
only honest way to exercise them is over a socket with the genuine client. Tests run the
server in-process on a background thread (``with FakeOpenAI() as fake: ...``); benchmarks
run ``python -m fake_openai`` as a subprocess so its CPU does not pollute the
measured process.

What a request gets, in order:

1. ``latency`` (every chat request, ``asyncio.sleep`` so concurrent requests overlap);
2. a probabilistic fault from ``faults`` (429/500/503/drop/malformed, plus "slow",
   which only adds delay and then carries on);
3. the next scripted :class:`Reply` (a queue for the request's model first, then the
   model-agnostic queue);
4. ``responder(body)`` if set;
5. :func:`default_reply` -- deterministic: a plan for plan-shaped structured-output
   requests, otherwise ``"fake answer: <first 80 chars of the last user message>"``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "PLAN_MARKER",
    "FakeOpenAI",
    "Faults",
    "PlanShape",
    "RecordedRequest",
    "Reply",
    "default_reply",
    "plan_shape",
]

JSON = dict[str, Any]

#: Text a planner prompt contains when it wants a plan back but cannot use response_format.
PLAN_MARKER = "Return the plan as JSON"
#: Agent names used when neither a schema nor the prompt names any agents.
FALLBACK_AGENTS: tuple[str, ...] = ("general",)
DEFAULT_MODEL = "fake-model"
_PLAN_PHASES = ("Research", "Analyse", "Summarise")
_MALFORMED_BODY = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"mess'

# status -> (error.type, error.code), shaped like api.openai.com's error bodies.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", "timeout"),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
}


@dataclass
class Reply:
    """One scripted response.

    A 200 reply with neither ``content`` nor ``tool_calls`` takes its content from
    :func:`default_reply`, so ``Reply(delay=3)`` means "the normal answer, but slowly".
    For non-200 replies ``content`` (if given) becomes the error message.
    """

    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] | None = None
    status: int = 200
    headers: dict[str, str] | None = None
    delay: float = 0.0
    drop: bool = False
    malformed: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class Faults:
    """Probabilistic fault injection, rolled per request before the script/default.

    The error rates (429, 500, 503, drop, malformed) are mutually exclusive slices of one
    uniform draw, so their sum should be <= 1; ``rate_slow`` is an independent second draw
    that adds ``slow_secs`` and then answers normally. ``seed`` makes sequential runs
    repeatable. ``models`` limits faults to requests for those models.
    """

    rate_429: float = 0.0
    retry_after: float | None = 1.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_slow: float = 0.0
    slow_secs: float = 5.0
    rate_drop: float = 0.0
    rate_malformed: float = 0.0
    seed: int | None = None
    models: set[str] | None = None


@dataclass
class RecordedRequest:
    """A chat completion request as the server saw it, and what it answered.

    ``status`` is None while the request is in flight and stays None when the connection
    was dropped (or the client went away first). ``usage`` is set only for valid 200
    responses. ``fault`` names the injected fault ("429", "500", "503", "drop",
    "malformed", "slow") or is None.
    """

    body: JSON | None
    model: str | None
    received_monotonic: float
    received_at: float
    headers: dict[str, str]
    status: int | None = None
    usage: dict[str, int] | None = None
    fault: str | None = None
    responded_monotonic: float | None = None


# --------------------------------------------------------------------------------------
# Plan detection and generation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanShape:
    """What :func:`plan_shape` learned about a plan schema.

    ``depends_on`` is None when steps have no such property, else "int" or "str" (the
    item type). ``extra_step`` / ``extra_top`` are the schemas of other *required*
    properties, filled with placeholders so strict schemas still validate.
    """

    agents: tuple[str, ...]
    depends_on: str | None = None
    id_kind: str | None = None
    min_steps: int = 0
    max_steps: int | None = None
    extra_step: dict[str, Any] = field(default_factory=dict)
    extra_top: dict[str, Any] = field(default_factory=dict)
    root: JSON = field(default_factory=dict, compare=False, repr=False)


def _resolve(node: Any, root: JSON) -> JSON:
    """Follow local ``$ref``s and unwrap ``allOf``/``anyOf``/``oneOf`` to one concrete schema.

    Pydantic emits enums and nested models as ``$ref`` into ``$defs`` (sometimes inside a
    one-element ``allOf``) and Optionals as ``anyOf [X, null]``; callers only care about X.
    """
    for _ in range(32):  # bounded: a cyclic $ref must not hang the server
        if not isinstance(node, dict):
            return {}
        ref = node.get("$ref")
        if isinstance(ref, str):
            target: Any = root
            if ref.startswith("#/"):
                for part in ref[2:].split("/"):
                    key = part.replace("~1", "/").replace("~0", "~")
                    target = target.get(key) if isinstance(target, dict) else None
            elif ref != "#":
                return {}
            node = target
            continue
        for key in ("allOf", "anyOf", "oneOf"):
            options = node.get(key)
            if isinstance(options, list) and options:
                concrete = [
                    o for o in options if not (isinstance(o, dict) and o.get("type") == "null")
                ]
                if concrete:
                    node = concrete[0]
                    break
        else:
            return node
    return {}


def _types(node: JSON) -> set[str]:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def _enum_values(node: Any, root: JSON) -> list[Any]:
    """All allowed constant values of a schema (enum, const, or a union of those)."""
    for _ in range(32):
        if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
            break
        node = _resolve({"$ref": node["$ref"]}, root)
    if not isinstance(node, dict):
        return []
    if isinstance(node.get("enum"), list):
        return [v for v in node["enum"] if v is not None]
    if "const" in node:
        return [node["const"]] if node["const"] is not None else []
    values: list[Any] = []
    for key in ("allOf", "anyOf", "oneOf"):
        for option in node.get(key) or []:
            values.extend(_enum_values(option, root))
    return values


def plan_shape(schema: Any) -> PlanShape | None:
    """Return a :class:`PlanShape` if ``schema`` describes a plan, else None.

    Tolerant by design, because the planner's pydantic models will evolve: a schema is a
    plan when (after resolving ``$ref``/``$defs``, ``allOf`` and nullable ``anyOf``) its
    top-level ``steps`` property is an array whose items have ``agent``, ``title`` and
    ``instructions`` properties. ``agent`` may be an enum/Literal (values used in order)
    or a plain string (:data:`FALLBACK_AGENTS`). ``depends_on`` and an ``id`` property are
    optional; any other required property gets a type-appropriate placeholder.
    """
    if not isinstance(schema, dict):
        return None
    top = _resolve(schema, schema)
    steps = _resolve((top.get("properties") or {}).get("steps"), schema)
    if not steps or ("array" not in _types(steps) and "items" not in steps):
        return None
    item = _resolve(steps.get("items"), schema)
    props = item.get("properties")
    if not isinstance(props, dict) or not {"agent", "title", "instructions"} <= props.keys():
        return None
    agents = tuple(str(v) for v in _enum_values(props["agent"], schema)) or FALLBACK_AGENTS
    depends_on = None
    if "depends_on" in props:
        dep_items = _resolve(_resolve(props["depends_on"], schema).get("items"), schema)
        depends_on = "str" if _types(dep_items) == {"string"} else "int"
    id_kind = None
    if "id" in props:
        id_kind = "str" if "string" in _types(_resolve(props["id"], schema)) else "int"
    known = {"agent", "title", "instructions", "depends_on", "id"}
    item_required = set(item.get("required") or [])
    top_required = set(top.get("required") or []) - {"steps"}
    return PlanShape(
        agents=agents,
        depends_on=depends_on,
        id_kind=id_kind,
        min_steps=int(steps.get("minItems", 0)),
        max_steps=int(steps["maxItems"]) if "maxItems" in steps else None,
        extra_step={k: v for k, v in props.items() if k in item_required - known},
        extra_top={k: v for k, v in (top.get("properties") or {}).items() if k in top_required},
        root=schema,
    )


def _placeholder(node: Any, root: JSON, index: int = 0) -> Any:
    """A value that satisfies a (simple) schema, for required fields we know nothing about."""
    if isinstance(node, dict) and "default" in node:
        return node["default"]
    values = _enum_values(node, root)
    if values:
        return values[0]
    concrete = _resolve(node, root)
    kinds = _types(concrete)
    if "object" in kinds or "properties" in concrete:
        props = concrete.get("properties") or {}
        required = concrete.get("required") or []
        return {k: _placeholder(props.get(k), root, index) for k in required}
    if "array" in kinds:
        return []
    if "string" in kinds:
        return "n/a"
    if "integer" in kinds:
        return index
    if "number" in kinds:
        return float(index)
    if "boolean" in kinds:
        return False
    return None


def build_plan(shape: PlanShape, goal: str) -> JSON:
    """A deterministic linear 3-step plan (bounded by the schema's min/maxItems)."""
    count = max(3, shape.min_steps)
    if shape.max_steps is not None:
        count = max(1, min(count, shape.max_steps))
    steps: list[JSON] = []
    for i in range(count):
        phase = _PLAN_PHASES[i % len(_PLAN_PHASES)]
        step: JSON = {k: _placeholder(v, shape.root, i) for k, v in shape.extra_step.items()}
        if shape.id_kind is not None:
            step["id"] = f"step_{i + 1}" if shape.id_kind == "str" else i
        step["agent"] = shape.agents[i % len(shape.agents)]
        step["title"] = f"Step {i + 1}: {phase}"
        step["instructions"] = f"{phase} for this request: {goal}"
        if shape.depends_on is not None:
            if i == 0:
                step["depends_on"] = []
            elif shape.depends_on == "int":
                step["depends_on"] = [i - 1]
            else:
                step["depends_on"] = [steps[i - 1]["id"] if shape.id_kind == "str" else str(i - 1)]
        steps.append(step)
    plan: JSON = {k: _placeholder(v, shape.root) for k, v in shape.extra_top.items()}
    plan["steps"] = steps
    return plan


_AGENT_LINE = re.compile(r"\bagents?\b[^:\n]{0,40}:[ \t]*(\S[^\n]*)", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*[`'\"*]*([A-Za-z_][\w-]{0,63})")
_NAME = re.compile(r"^[A-Za-z_][\w-]{0,63}$")


def _first_clause(text: str) -> str:
    """Cut ``"coder, tester. Return the plan..."`` down to ``"coder, tester"``."""
    return re.split(r"[.;](?:\s|$)", text, maxsplit=1)[0]


def _shape_from_text(texts: Iterable[str]) -> PlanShape:
    """Guess a plan shape for prompt-only planners (no response_format).

    Tries, in order: a plan JSON schema embedded in the prompt; a line such as
    ``Available agents: researcher, writer``; a bullet list under a line ending in
    ``agents:``; finally :data:`FALLBACK_AGENTS`. depends_on is integer indices.
    """
    texts = list(texts)
    decoder = json.JSONDecoder()
    for text in texts:
        for match in itertools.islice(re.finditer(r"\{", text[:200_000]), 2000):
            try:
                candidate, _ = decoder.raw_decode(text, match.start())
            except ValueError:
                continue
            shape = plan_shape(candidate)
            if shape is not None:
                return shape
    for text in texts:
        lines = text.splitlines()
        for n, line in enumerate(lines):
            found = _AGENT_LINE.search(line)
            if found:
                names = [
                    t.strip(" `'\"*.")
                    for t in re.split(r",|\||/|\bor\b|\band\b", _first_clause(found.group(1)))
                ]
                names = [t for t in names if _NAME.match(t)]
                if names:
                    return PlanShape(agents=tuple(names), depends_on="int")
            if re.search(r"\bagents?\b.*:\s*$", line, re.IGNORECASE):
                bullets = []
                for following in lines[n + 1 :]:
                    bullet = _BULLET.match(following)
                    if not bullet:
                        break
                    bullets.append(bullet.group(1))
                if bullets:
                    return PlanShape(agents=tuple(bullets), depends_on="int")
    return PlanShape(agents=FALLBACK_AGENTS, depends_on="int")


# --------------------------------------------------------------------------------------
# Default responder and usage
# --------------------------------------------------------------------------------------


def _text(content: Any) -> str:
    """Message content as plain text (string content or the text parts of a list)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _messages(body: JSON) -> list[JSON]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _last_text(messages: list[JSON], role: str) -> str:
    for message in reversed(messages):
        if message.get("role") == role:
            return _text(message.get("content"))
    return ""


def default_reply(body: JSON) -> Reply:
    """The deterministic answer used when nothing is scripted.

    * ``response_format`` json_schema describing a plan (see :func:`plan_shape`) -> plan JSON;
      any other json_schema -> a placeholder object matching it.
    * :data:`PLAN_MARKER` in the last user or last system message -> the plan as text,
      fenced in ```json (or bare JSON under ``response_format: json_object``).
    * otherwise ``"fake answer: " + first 80 chars of the last user message``.
    """
    messages = _messages(body)
    goal = " ".join(_last_text(messages, "user").split())
    fmt = body.get("response_format")
    fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt_type == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            shape = plan_shape(schema)
            if shape is not None:
                return Reply(content=json.dumps(build_plan(shape, goal[:200])))
            return Reply(content=json.dumps(_placeholder(schema, schema)))
    prompts = [_last_text(messages, "user"), _last_text(messages, "system")]
    if any(PLAN_MARKER.lower() in p.lower() for p in prompts):
        texts = [_text(m.get("content")) for m in messages if m.get("role") in ("system", "user")]
        plan = json.dumps(build_plan(_shape_from_text(texts), goal[:200]), indent=2)
        return Reply(content=plan if fmt_type == "json_object" else f"```json\n{plan}\n```")
    return Reply(content="fake answer: " + _last_text(messages, "user")[:80])


def _prompt_tokens(body: JSON) -> int:
    return max(1, sum(len(_text(m.get("content"))) for m in _messages(body)) // 4)


def _error_response(status: int, message: str | None, headers: dict[str, str] | None) -> Response:
    kind, code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    error = {
        "message": message or f"fake error {status}",
        "type": kind,
        "param": None,
        "code": code,
    }
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --------------------------------------------------------------------------------------
# Server plumbing
# --------------------------------------------------------------------------------------


def _tracking_protocol(registry: dict[Any, Any]) -> type[H11Protocol]:
    """An h11 protocol that remembers each connection's transport, keyed by client address.

    ASGI gives an app no way to kill its TCP connection (returning without a response
    makes uvicorn send a 500), so "drop" looks the transport up here and aborts it.
    """

    class _TrackingH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if self.client is not None:
                registry[self.client] = transport

        def connection_lost(self, exc: Exception | None) -> None:
            if self.client is not None and registry.get(self.client) is self.transport:
                del registry[self.client]
            super().connection_lost(exc)

    return _TrackingH11Protocol


class _DropConnection(Response):
    """A 'response' that aborts the TCP connection so the client sees no reply at all."""

    def __init__(self, registry: dict[Any, Any]) -> None:
        super().__init__()
        self._registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = self._registry.get(scope.get("client"))
        if transport is None:
            raise RuntimeError("fake_openai: no transport to drop for this connection")
        transport.abort()
        # Wait for uvicorn to notice, so it does not answer on our behalf with a 500.
        async with asyncio.timeout(2):
            while (await receive())["type"] != "http.disconnect":
                pass


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


class FakeOpenAI:
    """The fake server. ``start()``/``stop()`` or use as a context manager.

    ``latency``, ``faults`` and ``responder`` may be changed while it runs; the script
    queue and recorded requests are guarded by a lock because the server thread and the
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
        self.host = host
        self.port = port
        self.base_url = ""
        self.responder: Callable[[JSON], Reply | None] | None = None
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._scripts: dict[str | None, deque[Reply]] = {}
        self._faults = Faults()
        self._rng = random.Random()
        self.faults = faults or Faults()
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
            http=_tracking_protocol(self._transports),
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
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        """Replacing the faults also reseeds the fault RNG, so runs are repeatable."""
        with self._lock:
            self._faults = value
            self._rng = random.Random(value.seed)

    def script(self, *replies: Reply, model: str | None = None) -> None:
        """Queue replies, consumed FIFO; with ``model`` only by requests for that model."""
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(replies)

    def pending(self, model: str | None = None) -> int:
        """How many scripted replies for ``model`` (None: the shared queue) are unused."""
        with self._lock:
            return len(self._scripts.get(model, ()))

    def reset(self) -> None:
        """Clear script, faults, recorded requests and responder (latency is kept)."""
        self.faults = Faults()
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
            self.responder = None
            self._call_ids = itertools.count(1)

    def successful_usage(self) -> tuple[int, int]:
        """(prompt, completion) token sums over the 200 responses actually sent."""
        with self._lock:
            done = [r.usage for r in self.requests if r.status == 200 and r.usage is not None]
        return sum(u["prompt_tokens"] for u in done), sum(u["completion_tokens"] for u in done)

    # -- request handling -----------------------------------------------------------------

    def _roll_fault(self, model: str | None) -> tuple[Reply | None, float, str | None]:
        """(fault reply or None, extra delay, fault label) for one request."""
        faults = self._faults
        if faults.models is not None and model not in faults.models:
            return None, 0.0, None
        with self._lock:
            draw, slow_draw = self._rng.random(), self._rng.random()
        edge = 0.0
        kinds: list[tuple[float, str]] = [
            (faults.rate_429, "429"),
            (faults.rate_500, "500"),
            (faults.rate_503, "503"),
            (faults.rate_drop, "drop"),
            (faults.rate_malformed, "malformed"),
        ]
        for rate, label in kinds:
            edge += rate
            if rate > 0 and draw < edge:
                return self._fault_reply(label), 0.0, label
        if faults.rate_slow > 0 and slow_draw < faults.rate_slow:
            return None, faults.slow_secs, "slow"
        return None, 0.0, None

    def _fault_reply(self, label: str) -> Reply:
        if label == "drop":
            return Reply(drop=True)
        if label == "malformed":
            return Reply(malformed=True)
        if label == "429":
            retry = self._faults.retry_after
            headers = None if retry is None else {"Retry-After": _format_seconds(retry)}
            return Reply(
                status=429, headers=headers, content="Rate limit reached (injected fault)."
            )
        return Reply(status=int(label), content=f"Injected fault {label}.")

    def _next_reply(self, body: JSON, model: str | None) -> Reply:
        with self._lock:
            for key in (model, None) if model is not None else (None,):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        responder = self.responder
        if responder is not None:
            reply = responder(body)
            if reply is not None:
                return reply
        return default_reply(body)

    def _finish(
        self, record: RecordedRequest, status: int | None, usage: dict[str, int] | None = None
    ) -> None:
        with self._lock:
            record.status = status
            record.usage = usage
            record.responded_monotonic = time.monotonic()

    async def _pause(self, seconds: float) -> bool:
        """Sleep without blocking the loop; False if the server is stopping meanwhile."""
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
            return _DropConnection(self._transports)
        if body is None:
            self._finish(record, 400)
            return _error_response(400, "Request body must be a JSON object.", None)
        if body.get("stream"):
            self._finish(record, 400)
            return _error_response(400, "fake_openai does not support stream=true.", None)

        reply, extra_delay, record.fault = self._roll_fault(model)
        if reply is None:
            reply = self._next_reply(body, model)
        if not await self._pause(extra_delay + reply.delay) or reply.drop:
            self._finish(record, None)
            return _DropConnection(self._transports)
        if await request.is_disconnected():  # the client gave up; nothing will be delivered
            self._finish(record, None)
            return Response(status_code=499)
        if reply.malformed:
            self._finish(record, 200)
            return Response(
                _MALFORMED_BODY,
                status_code=200,
                media_type="application/json",
                headers=reply.headers,
            )
        if reply.status != 200:
            self._finish(record, reply.status)
            return _error_response(reply.status, reply.content, reply.headers)

        payload = self._completion(body, model or DEFAULT_MODEL, reply)
        self._finish(record, 200, payload["usage"])
        return JSONResponse(payload, headers=reply.headers)

    def _completion(self, body: JSON, model: str, reply: Reply) -> JSON:
        content = reply.content
        if content is None and not reply.tool_calls:
            content = default_reply(body).content
        message: JSON = {"role": "assistant", "content": content, "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{next(self._call_ids)}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
                for name, arguments in reply.tool_calls
            ]
        produced = content or json.dumps(message.get("tool_calls") or "")
        prompt = reply.prompt_tokens if reply.prompt_tokens is not None else _prompt_tokens(body)
        completion = (
            reply.completion_tokens
            if reply.completion_tokens is not None
            else max(1, len(produced) // 4)
        )
        return {
            "id": f"chatcmpl-fake{next(self._completion_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    async def _models(self, request: Request) -> Response:
        with self._lock:
            names = list(self._models_seen)
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": "fake-openai"} for n in names
        ]
        return JSONResponse({"object": "list", "data": data})

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


# --------------------------------------------------------------------------------------
# Standalone mode (benchmarks)
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run in the foreground; print ``READY <base_url>`` once listening; exit on SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m fake_openai", description="Fake OpenAI Chat Completions server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    for rate in ("429", "500", "503", "slow", "drop", "malformed"):
        parser.add_argument(f"--rate-{rate}", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--slow-secs", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    faults = Faults(
        rate_429=args.rate_429,
        retry_after=args.retry_after,
        rate_500=args.rate_500,
        rate_503=args.rate_503,
        rate_slow=args.rate_slow,
        slow_secs=args.slow_secs,
        rate_drop=args.rate_drop,
        rate_malformed=args.rate_malformed,
        seed=args.seed,
    )

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    fake = FakeOpenAI(latency=args.latency, host=args.host, port=args.port, faults=faults).start()
    try:
        sys.stdout.write(f"READY {fake.base_url}\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
