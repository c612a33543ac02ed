"""ASGI middleware."""

from __future__ import annotations

import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

_log = structlog.get_logger("api")


class BodySizeLimit:
    """Refuse bodies over the limit with 413 before reading them into memory, whether or not
    the client sent Content-Length."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = error_response(413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes")
        await resp(scope, receive, send)


class _TooLarge(Exception):
    pass


_REQUEST_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= 128 and all(c in _REQUEST_ID_OK for c in value)


def _has_nul(scope: Scope) -> bool:
    raw = (scope.get("raw_path") or b"") + b"?" + (scope.get("query_string") or b"")
    return "\x00" in scope.get("path", "") or b"%00" in raw or b"\x00" in raw


class RequestContext:
    """X-Request-ID: taken from the request when it is sane (≤128 chars of [A-Za-z0-9-_.:]),
    else generated; bound into structlog's contextvars for every log line of the request and
    returned on every response. Also adds headers that dependencies left in
    `request.state.response_headers` (rate-limit headers), so they reach error responses too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _valid_request_id(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (k, v) for k, v in message.get("headers", [])
                    if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", rid.encode("latin-1")))
                present = {k.lower() for k, _ in headers}
                for name, value in (state.get("response_headers") or {}).items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        if _has_nul(scope):
            # PostgreSQL text cannot hold NUL: refuse such ids and cursors up front.
            resp = error_response(400, "bad_request", "NUL characters are not allowed in the URL")
            await resp(scope, receive, send_with_headers)
            structlog.contextvars.clear_contextvars()
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            # Answer here, with the envelope and the request id, then let the server log it
            # (Starlette's outermost error middleware sees the response started and sends none).
            _log.error("unhandled_error", error_type=type(exc).__name__, path=scope.get("path"))
            if not started:
                resp = error_response(500, "internal_error", "internal server error",
                                      {"request_id": rid})
                await resp(scope, receive, send_with_headers)
            raise
        finally:
            structlog.contextvars.clear_contextvars()
