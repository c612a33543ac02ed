"""Database round trips per API request, counted at the driver (tests/round_trips.py)."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.round_trips import EXECUTIONS, counting
from tests.utils import Stack

_calls: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("round_trips", default=None)


def _in_request(name: str, sql: str) -> None:
    """Only round trips in the context of the request being counted (background loops of the
    app and the worker run in contexts of their own), and not the API key's lookup: it is made
    once per key per `auth_key_cache_secs`, which a slow repeat can outlast."""
    calls = _calls.get()
    if calls is not None and "FROM api_keys" not in sql:
        calls.append(name)


@pytest.fixture
def counted() -> Iterator[Callable[[Callable[[], Awaitable[httpx.Response]]], Awaitable[list[str]]]]:
    async def count(request: Callable[[], Awaitable[httpx.Response]]) -> list[str]:
        calls: list[str] = []
        token = _calls.set(calls)
        try:
            resp = await request()
        finally:
            _calls.reset(token)
        assert resp.status_code < 300, resp.text
        return calls

    with counting(_in_request):
        yield count


async def _settled(count: Callable[..., Awaitable[list[str]]], request: Callable[[], Awaitable[httpx.Response]]) -> list[list[str]]:
    """The round trips of several repeats: each must execute one statement; a repeat may also
    prepare it when the pool hands out a connection that has not seen it yet."""
    runs = [await count(request) for _ in range(6)]
    for calls in runs:
        assert [c for c in calls if c in EXECUTIONS] == ["bind_execute"], runs
    return runs


async def test_an_authenticated_get_is_one_round_trip(stack: Stack, counted: Any) -> None:
    task_id = await stack.submit("read me")
    runs = await _settled(counted, lambda: stack.http.get(f"/tasks/{task_id}", headers=stack.headers))
    assert ["bind_execute"] in runs, runs  # on a warm connection, nothing but the statement


async def test_a_post_is_one_statement_without_a_transaction(stack: Stack, counted: Any) -> None:
    runs = await _settled(
        counted, lambda: stack.http.post("/tasks", json={"description": "count me"}, headers=stack.headers)
    )
    assert ["bind_execute"] in runs, runs
