"""The embedded dev stack: real PostgreSQL and a real Temporal dev server from wheels, plus the
helpers to start, wait for and stop child processes. `orchestrator up`, the tests and the
benchmarks use it; this package's names below are its public surface."""

from durable_orchestrator.devstack.ports import free_port, wait_for_port
from durable_orchestrator.devstack.postgres import EmbeddedPostgres
from durable_orchestrator.devstack.processes import stop_process, wait_http
from durable_orchestrator.devstack.temporal_server import TemporalDevServer, temporal_binary

__all__ = [
    "EmbeddedPostgres",
    "TemporalDevServer",
    "free_port",
    "stop_process",
    "temporal_binary",
    "wait_for_port",
    "wait_http",
]
