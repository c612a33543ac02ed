"""Streamed answers (`stream: true`): the chat.completion.chunk events api.openai.com sends.

Content goes out a word at a time, tool calls as a header chunk then argument fragments, then
the finish reason, the usage chunk when `stream_options.include_usage` is set, and `[DONE]`.
A reply can break the stream the three ways real streams break: the connection drops mid-answer,
the body ends early without a finish reason, or the server stops sending."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fake_openai.replies import JSON, RecordedRequest, Reply

_WORD = re.compile(r"\s*\S+\s*")
_ARG_FRAGMENT = 16  # characters of tool-call arguments per chunk, as providers split them


def chunks(payload: JSON, include_usage: bool) -> Iterator[tuple[JSON, bool]]:
    """(chunk, carries generated text) for a chat.completion `payload`, in wire order."""
    choice = payload["choices"][0]
    message = choice["message"]
    head = {k: payload[k] for k in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"

    def chunk(delta: JSON, finish: str | None = None) -> JSON:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""}), False
    for piece in _WORD.findall(message.get("content") or ""):
        yield chunk({"content": piece}), True
    for i, call in enumerate(message.get("tool_calls") or []):
        fn = call["function"]
        yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                     "function": {"name": fn["name"], "arguments": ""}}]}), True
        args = fn["arguments"]
        for start in range(0, len(args), _ARG_FRAGMENT):
            fragment = args[start:start + _ARG_FRAGMENT]
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}), True
    yield chunk({}, choice["finish_reason"]), False
    if include_usage:
        yield {**head, "choices": [], "usage": payload["usage"]}, False


class ChunkStream(Response):
    """Sends `payload` as server-sent chunks, honouring the reply's delay and break mode."""

    def __init__(
        self,
        payload: JSON,
        reply: Reply,
        record: RecordedRequest,
        *,
        include_usage: bool,
        pause: Callable[[float], Awaitable[bool]],
        finish: Callable[[RecordedRequest, int | None, dict[str, int] | None], None],
        transports: dict[Any, Any],
    ) -> None:
        super().__init__()
        self._payload, self._reply, self._record = payload, reply, record
        self._include_usage = include_usage
        self._pause, self._finish, self._transports = pause, finish, transports

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        headers += [(k.lower().encode(), v.encode()) for k, v in (self._reply.headers or {}).items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        events = list(chunks(self._payload, self._include_usage))
        break_at = max(2, len(events) // 2)
        for n, (event, generated) in enumerate(events):
            if self._reply.stream_break and n == break_at:
                await self._break(scope, receive, send)
                return
            if generated and self._reply.stamp_chunks and "content" in event["choices"][0]["delta"]:
                event["choices"][0]["delta"]["content"] = f"t{time.monotonic_ns()} "
            await send({"type": "http.response.body", "body": _sse(event), "more_body": True})
            if generated and self._record.first_chunk_monotonic is None:
                self._record.first_chunk_monotonic = time.monotonic()
            if generated and not await self._pause(self._reply.chunk_delay):
                self._finish(self._record, None, None)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        self._finish(self._record, 200, self._payload["usage"])

    async def _break(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._finish(self._record, None, None)
        mode = self._reply.stream_break
        if mode == "truncate":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif mode == "drop":
            transport = self._transports.get(scope.get("client"))
            if transport is not None:
                transport.abort()
        else:  # stall: say nothing more until the client gives up or the server stops
            waiter = asyncio.ensure_future(self._wait_disconnect(receive))
            try:
                while not waiter.done() and await self._pause(0.05):
                    pass
            finally:
                waiter.cancel()

    @staticmethod
    async def _wait_disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


def _sse(event: JSON) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
