"""OpenTelemetry GenAI semantic conventions for LLM calls: span attribute names and the two
client metrics, `gen_ai.client.token.usage` and `gen_ai.client.operation.duration`.

The metrics are recorded twice: through the OpenTelemetry metrics API under their convention
names (exported by whatever MeterProvider the process installs; none = no-op), and as
Prometheus histograms `gen_ai_client_token_usage` / `gen_ai_client_operation_duration_seconds`
(the names an OpenTelemetry-to-Prometheus bridge gives them) on the existing `/metrics`.
Prometheus labels stay bounded: the requested (configured) model, never the echoed one.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from opentelemetry import metrics as otel_metrics
from prometheus_client import Histogram

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"  # the older name of gen_ai.provider.name, kept for older backends
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
COST_USD = "orchestrator.cost.usd"
TASK_ID = "orchestrator.task.id"
STEP_INDEX = "orchestrator.step.index"
AGENT = "orchestrator.agent"

CHAT = "chat"

# Bucket boundaries the conventions advise.
_TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)

_meter = otel_metrics.get_meter("orchestrator")
TOKEN_USAGE = _meter.create_histogram(
    "gen_ai.client.token.usage",
    unit="{token}",
    description="Number of input and output tokens used.",
    explicit_bucket_boundaries_advisory=list(_TOKEN_BUCKETS),
)
OPERATION_DURATION = _meter.create_histogram(
    "gen_ai.client.operation.duration",
    unit="s",
    description="GenAI operation duration.",
    explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
)
PROM_TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens per LLM call (gen_ai.client.token.usage).",
    ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_token_type"],
    buckets=_TOKEN_BUCKETS,
)
PROM_OPERATION_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "LLM call duration (gen_ai.client.operation.duration).",
    ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type"],
    buckets=_DURATION_BUCKETS,
)


def record(
    *,
    provider: str,
    request_model: str,
    duration_s: float,
    response_model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    error_type: str | None = None,
) -> None:
    """One LLM call in both metrics; tokens only for calls that returned usage."""
    attrs: dict[str, Any] = {OPERATION: CHAT, PROVIDER: provider, REQUEST_MODEL: request_model}
    if response_model:
        attrs[RESPONSE_MODEL] = response_model
    if error_type:
        attrs[ERROR_TYPE] = error_type
    OPERATION_DURATION.record(duration_s, attrs)
    PROM_OPERATION_DURATION.labels(CHAT, provider, request_model, error_type or "").observe(
        duration_s
    )
    for kind, count in (("input", input_tokens), ("output", output_tokens)):
        if count is None:
            continue
        TOKEN_USAGE.record(count, {**attrs, TOKEN_TYPE: kind})
        PROM_TOKEN_USAGE.labels(CHAT, provider, request_model, kind).observe(count)


def call_context() -> dict[str, Any]:
    """Task id, step index and agent of the activity making the call (bound to the log context
    by `activity_log_context`), as span attributes."""
    bound = structlog.contextvars.get_contextvars()
    out: dict[str, Any] = {}
    if bound.get("task_id") is not None:
        out[TASK_ID] = str(bound["task_id"])
    if bound.get("step") is not None:
        out[STEP_INDEX] = int(bound["step"])
    if bound.get("agent") is not None:
        out[AGENT] = str(bound["agent"])
    return out


def messages_json(messages: Any) -> str:
    return json.dumps(messages, default=str, ensure_ascii=False)
