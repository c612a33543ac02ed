"""Database round trips per request, counted at the driver: every message exchange asyncpg's
protocol makes for a request (BEGIN and COMMIT included), nothing inferred from SQL logs."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.utils import Stack

# The protocol calls that are a round trip to the server. `prepare` is one too, but only the
# first time a connection sees a statement (asyncpg caches it per connection after that).
_EXECUTIONS = {"query", "bind_execute", "bind_execute_many", "copy_in", "copy_out", "execute"}
_ROUND_TRIPS = _EXECUTIONS | {"prepare", "close_statement"}

_calls: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("round_trips", default=None)


class _CountingProtocol:
    """Forwards everything to asyncpg's protocol, noting round trips made while `_calls` is
    set, which is only in the context of the request being counted (background loops of the
    app and the worker run in contexts of their own)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        calls = _calls.get()
        if name in _ROUND_TRIPS and calls is not None:
            calls.append(name)
        return attr


@pytest.fixture
def counted(stack: Stack) -> Iterator[Callable[[Callable[[], Awaitable[httpx.Response]]], Awaitable[list[str]]]]:
    # At every checkout, not at connect: a connection a background loop holds while the test
    # starts is handed to requests later too (the pool is LIFO), and must be counted as well.
    def wrap(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        raw = dbapi_conn._connection  # asyncpg's Connection under SQLAlchemy's adapter
        if not isinstance(raw._protocol, _CountingProtocol):
            raw._protocol = _CountingProtocol(raw._protocol)

    sync_engine = stack.engine.sync_engine
    event.listen(sync_engine, "checkout", wrap)

    async def count(request: Callable[[], Awaitable[httpx.Response]]) -> list[str]:
        calls: list[str] = []
        token = _calls.set(calls)
        try:
            resp = await request()
        finally:
            _calls.reset(token)
        assert resp.status_code < 300, resp.text
        return calls

    yield count
    event.remove(sync_engine, "checkout", wrap)


async def _settled(count: Callable[..., Awaitable[list[str]]], request: Callable[[], Awaitable[httpx.Response]]) -> list[list[str]]:
    """The round trips of several repeats: each must execute one statement; a repeat may also
    prepare it when the pool hands out a connection that has not seen it yet."""
    runs = [await count(request) for _ in range(6)]
    for calls in runs[1:]:  # the first also authenticates the key (cached afterwards)
        assert [c for c in calls if c in _EXECUTIONS] == ["bind_execute"], runs
    return runs


async def test_an_authenticated_get_is_one_round_trip(stack: Stack, counted: Any) -> None:
    task_id = await stack.submit("read me")
    runs = await _settled(counted, lambda: stack.http.get(f"/tasks/{task_id}", headers=stack.headers))
    assert ["bind_execute"] in runs[1:], runs  # on a warm connection, nothing but the statement


async def test_a_post_is_one_statement_without_a_transaction(stack: Stack, counted: Any) -> None:
    runs = await _settled(
        counted, lambda: stack.http.post("/tasks", json={"description": "count me"}, headers=stack.headers)
    )
    assert ["bind_execute"] in runs[1:], runs
