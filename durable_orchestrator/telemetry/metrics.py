"""Every Prometheus metric of the service, defined once.

Labels are bounded: model names come from settings, agents from the agent registry, tools from
the tool registry, routes are route *templates* (`/tasks/{task_id}`), statuses/outcomes are small
enums. Never put task ids, user ids or raw paths in a label.

The API serves these on `GET /metrics`; the worker on its own port (ORCH_WORKER_METRICS_PORT).
The Temporal SDK's own metrics (`temporal_*`) are served by the SDK runtime on
ORCH_TEMPORAL_METRICS_PORT (see `worker.py`).

Other modules record through the small helpers at the bottom, so the metric objects stay here.
(`circuit_breaker_state{model}` is defined by the resilience module.)
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)

# LLM calls last from tens of ms (fake/local) to minutes (long generations).
_SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# --- tasks -------------------------------------------------------------------------------------
TASKS_SUBMITTED = Counter("tasks_submitted", "Tasks accepted by the API (new, not idempotent replays).")
TASKS_FINISHED = Counter("tasks_finished", "Tasks that reached a terminal status.", ["status"])
TASKS_RECONCILED = Counter(
    "tasks_reconciled",
    "Disagreements of task row and workflow the reconciler repaired: started, closed_<status>.",
    ["action"],
)
TASK_DURATION = Histogram(
    "task_duration_seconds", "Task wall time from submission to terminal status.", buckets=_SLOW_BUCKETS
)
STEP_DURATION = Histogram(
    "step_duration_seconds", "Duration of one step activity attempt.", ["agent"], buckets=_SLOW_BUCKETS
)

# --- LLM ---------------------------------------------------------------------------------------
LLM_REQUESTS = Counter(
    "llm_requests", "LLM calls by outcome (ok, rate_limited, server_error, timeout, error).",
    ["model", "outcome"],
)
LLM_LATENCY = Histogram("llm_latency_seconds", "LLM call latency.", ["model"], buckets=_SLOW_BUCKETS)
LLM_TOKENS = Counter("llm_tokens", "Tokens used, kind = prompt | completion.", ["model", "kind"])
LLM_COST = Counter("llm_cost_usd", "Estimated spend in USD from the price table.", ["model"])

# --- tools -------------------------------------------------------------------------------------
TOOL_CALLS = Counter("tool_calls", "Tool invocations by tool and status (ok, error, denied, timeout).", ["tool", "status"])

# --- HTTP --------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter("http_requests", "HTTP requests by route template.", ["route", "method", "code"])
HTTP_DURATION = Histogram(
    "http_request_duration_seconds", "HTTP request latency by route template.", ["route", "method"],
    buckets=_HTTP_BUCKETS,
)


# --- long-term memory ----------------------------------------------------------------------------
EMBEDDING_BATCH = Histogram(
    "embedding_batch_texts",
    "Texts per embedding forward pass, by source: query (single texts, micro-batched) or outbox "
    "(the memory writer's batches of completed tasks' results).",
    ["source"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
MEMORIES_WRITTEN = Counter(
    "memory_outbox_written", "Queued memories the memory writer embedded and stored."
)

# --- helpers -------------------------------------------------------------------------------------
def record_llm_call(
    model: str,
    outcome: str,
    latency_s: float,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cost_usd: float = 0.0,
) -> None:
    LLM_REQUESTS.labels(model, outcome).inc()
    LLM_LATENCY.labels(model).observe(latency_s)
    if prompt_tokens:
        LLM_TOKENS.labels(model, "prompt").inc(prompt_tokens)
    if completion_tokens:
        LLM_TOKENS.labels(model, "completion").inc(completion_tokens)
    if cost_usd:
        LLM_COST.labels(model).inc(cost_usd)


def record_tool_call(tool: str, status: str) -> None:
    """For the tools module: one call per tool invocation; status ok | error | denied | timeout."""
    TOOL_CALLS.labels(tool, status).inc()


def record_task_finished(status: str, duration_s: float | None) -> None:
    TASKS_FINISHED.labels(status).inc()
    if duration_s is not None and duration_s >= 0:
        TASK_DURATION.observe(duration_s)


def record_embedding_batch(source: str, texts: int) -> None:
    EMBEDDING_BATCH.labels(source).observe(texts)


def render_latest() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve the default registry on its own port (the worker has no HTTP app)."""
    start_http_server(port, addr=addr)
