"""What the fake answers: scripted replies, the default answer, and the requests it recorded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fake_openai import plans

JSON = dict[str, Any]


class Hold:
    """A gate that held replies wait behind until the test calls :meth:`release`: how a test
    keeps a step in flight for exactly as long as it needs, with no sleep and no time window.

    One Hold may gate many replies; ``arrived`` counts the requests that reached it.
    Thread-safe: the server's loop waits on it while the test's thread (or loop) releases."""

    def __init__(self) -> None:
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._arrived = 0

    @property
    def arrived(self) -> int:
        with self._lock:
            return self._arrived

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def release(self) -> None:
        self._released.set()

    def _arrive(self) -> None:
        with self._lock:
            self._arrived += 1

    async def reached(self, count: int = 1, *, within: float = 60) -> None:
        """Wait (without blocking the caller's loop) until ``count`` requests are held here."""
        deadline = time.monotonic() + within
        while self.arrived < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.arrived} of {count} requests reached the hold in {within}s"
                )
            await asyncio.sleep(0.01)


@dataclass
class Reply:
    """One scripted response.

    A 200 reply with neither ``content`` nor ``tool_calls`` takes its content from
    :func:`default_reply`, so ``Reply(delay=3)`` means "the normal answer, but slowly".
    For non-200 replies ``content`` (if given) becomes the error message. A scripted
    ``content`` is sent as it is, which is how a test gets an invalid plan. With ``hold`` the
    reply waits until the test releases that :class:`Hold`.
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
    # The model name the answer carries, as real providers answer with a snapshot name
    # ("gpt-4o-mini-2024-07-18"); default: the model requested.
    answer_model: str | None = None
    # Streaming (requests with ``stream: true``): pause between chunks, and how the stream
    # breaks: "drop" (connection cut mid-answer), "truncate" (ends cleanly without a finish
    # reason or [DONE]) or "stall" (stops sending; the client's read timeout must fire).
    chunk_delay: float = 0.0
    stream_break: str | None = None
    # Benchmarks: each streamed word is replaced by `t<CLOCK_MONOTONIC ns at send> `, so a client
    # on the same machine can tell how long the text took to reach it.
    stamp_chunks: bool = False
    hold: Hold | None = None


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
    streamed: bool = False
    first_chunk_monotonic: float | None = None


Responder = Callable[[JSON], Reply | None]


class Script:
    """Scripted replies, consumed FIFO: a request takes the next reply queued for its model,
    else the next model-agnostic one, else asks ``responder``, else gets :func:`default_reply`.

    Locked because the server thread pops while the test thread queues."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str | None, deque[Reply]] = {}
        self.responder: Responder | None = None

    def add(self, replies: tuple[Reply, ...], model: str | None) -> None:
        with self._lock:
            self._queues.setdefault(model, deque()).extend(replies)

    def pending(self, model: str | None) -> int:
        with self._lock:
            return len(self._queues.get(model, ()))

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()
            self.responder = None

    def next(self, body: JSON, model: str | None) -> Reply:
        with self._lock:
            for key in (model, None) if model is not None else (None,):
                queue = self._queues.get(key)
                if queue:
                    return queue.popleft()
        responder = self.responder
        if responder is not None:
            reply = responder(body)
            if reply is not None:
                return reply
        return default_reply(body)


def text(content: Any) -> str:
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


def messages(body: JSON) -> list[JSON]:
    found = body.get("messages")
    return [m for m in found if isinstance(m, dict)] if isinstance(found, list) else []


def last_text(body: JSON, role: str) -> str:
    for message in reversed(messages(body)):
        if message.get("role") == role:
            return text(message.get("content"))
    return ""


def default_reply(body: JSON) -> Reply:
    """The deterministic answer used when nothing is scripted: a valid planner plan for a
    plan request (see :mod:`fake_openai.plans`), otherwise
    ``"fake answer: " + the first 80 characters of the last user message``."""
    if plans.is_plan_request(body):
        goal = " ".join(last_text(body, "user").split())
        return Reply(content=plans.plan_for(body, goal).model_dump_json())
    return Reply(content="fake answer: " + last_text(body, "user")[:80])


def prompt_tokens(body: JSON) -> int:
    """A rough token count (4 characters a token), the same for every request of a body."""
    return max(1, sum(len(text(m.get("content"))) for m in messages(body)) // 4)
