"""Fault injection: probabilistic 429/500/503 (with Retry-After), slow answers, malformed
bodies and connections dropped without a reply."""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from fake_openai.replies import Reply

#: A chat.completion body cut off mid-way: what a proxy dying mid-response delivers.
MALFORMED_BODY = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"mess'


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


class FaultRoller:
    """Draws the faults of one :class:`Faults` setting from its own seeded RNG."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()

    def roll(self, model: str | None) -> tuple[Reply | None, float, str | None]:
        """(fault reply or None, extra delay, fault label) for one request."""
        faults = self.faults
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
                return self._reply(label), 0.0, label
        if faults.rate_slow > 0 and slow_draw < faults.rate_slow:
            return None, faults.slow_secs, "slow"
        return None, 0.0, None

    def _reply(self, label: str) -> Reply:
        if label == "drop":
            return Reply(drop=True)
        if label == "malformed":
            return Reply(malformed=True)
        if label == "429":
            retry = self.faults.retry_after
            headers = None if retry is None else {"Retry-After": format_seconds(retry)}
            return Reply(
                status=429, headers=headers, content="Rate limit reached (injected fault)."
            )
        return Reply(status=int(label), content=f"Injected fault {label}.")


def format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def tracking_protocol(registry: dict[Any, Any]) -> type[H11Protocol]:
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


class DropConnection(Response):
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
