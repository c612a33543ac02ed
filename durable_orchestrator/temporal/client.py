"""Temporal client construction, shared by the API, the worker and the CLI."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from durable_orchestrator.settings import Settings


def temporal_address(settings: Settings) -> str:
    if not settings.temporal_address:
        raise RuntimeError(
            "TEMPORAL_ADDRESS is not set; run `orchestrator up` (embedded dev server) or point "
            "TEMPORAL_ADDRESS at a Temporal frontend"
        )
    return settings.temporal_address


def metrics_runtime(bind_address: str) -> Runtime:
    """A Temporal SDK runtime serving its own metrics (temporal_*) in Prometheus format."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address)))


async def connect(settings: Settings, *, runtime: Runtime | None = None, tracing: bool = True) -> Client:
    """Connect; with `tracing` the OpenTelemetry TracingInterceptor rides on the client (and the
    worker built on it inherits it), so traces continue from the API into workflows/activities."""
    from durable_orchestrator.telemetry.tracing import tracing_interceptors

    return await Client.connect(
        temporal_address(settings),
        namespace=settings.temporal_namespace,
        interceptors=tracing_interceptors() if tracing else [],
        runtime=runtime,
    )
