"""Database round trips counted at the driver: every message exchange asyncpg's protocol makes
(BEGIN and COMMIT included), nothing inferred from SQL logs."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import asyncpg
from sqlalchemy import event
from sqlalchemy.pool import Pool

from durable_orchestrator.data import engine

# The protocol calls that are a round trip to the server. `prepare` is one too, but only the
# first time a connection sees a statement (asyncpg caches it per connection after that).
EXECUTIONS = {"query", "bind_execute", "bind_execute_many", "copy_in", "copy_out", "execute"}
ROUND_TRIPS = EXECUTIONS | {"prepare", "close_statement"}

# Who is counting now: each gets every round trip (the protocol call's name and its SQL, when it
# has some) and decides whether it is theirs.
Recorder = Callable[[str, str], None]
_recorders: list[Recorder] = []

# asyncpg looks up a type it has no codec for (array types among them) the first time a
# connection meets it: three round trips (JIT off, the lookup, JIT back), once per connection.
# Whether a step or a request pays them depends on which pooled connection it was handed, so
# they are not counted as the work's own.
_introspecting: contextvars.ContextVar[bool] = contextvars.ContextVar("introspecting", default=False)
_introspect_types = asyncpg.connection.Connection._introspect_types


async def _uncounted_introspection(self: Any, *args: Any, **kwargs: Any) -> Any:
    token = _introspecting.set(True)
    try:
        return await _introspect_types(self, *args, **kwargs)
    finally:
        _introspecting.reset(token)


class _CountingProtocol:
    """Forwards everything to asyncpg's protocol and tells the recorders of each round trip."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in ROUND_TRIPS or not _recorders or _introspecting.get():
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            # A prepared statement's state carries its SQL; a simple query is the SQL itself.
            sql = getattr(args[0], "query", args[0]) if args else ""
            for record in list(_recorders):
                record(name, sql if isinstance(sql, str) else "")
            return attr(*args, **kwargs)

        return call


def _wrap(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    raw = dbapi_conn._connection  # asyncpg's Connection under SQLAlchemy's adapter
    if not isinstance(raw._protocol, _CountingProtocol):
        raw._protocol = _CountingProtocol(raw._protocol)


@contextlib.contextmanager
def counting(record: Recorder) -> Iterator[None]:
    """Every pool's connections (the API's and the worker's) counted while inside. Wrapped at
    every checkout, not at connect: a connection a background loop holds when counting starts
    is handed out later too (the pools are LIFO), and must be counted as well.

    Inside, no idle connection is probed at checkout (BEGIN, a no-op, ROLLBACK: see
    `engine.PING_IF_IDLE_SECS`): on a busy machine, or late in a long suite, a pool can sit idle
    for over a second, and what is counted is the work's own round trips. Nor is asyncpg's
    one-off type lookup on a connection (see `_introspecting`)."""
    event.listen(Pool, "checkout", _wrap)
    _recorders.append(record)
    try:
        with (
            mock.patch.object(engine, "PING_IF_IDLE_SECS", float("inf")),
            mock.patch.object(asyncpg.connection.Connection, "_introspect_types", _uncounted_introspection),
        ):
            yield
    finally:
        _recorders.remove(record)
        event.remove(Pool, "checkout", _wrap)
