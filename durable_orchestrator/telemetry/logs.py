"""structlog setup: JSON lines (or console) on stderr, one event per line."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import structlog
from opentelemetry import trace
from temporalio import activity

# Keys whose values never reach a log line (secrets and full prompts); set
# ORCH_LOG_PROMPTS=true to let prompts/completions through while debugging.
SECRET_KEYS = frozenset({"api_key", "key", "password", "secret", "token", "authorization", "x-api-key",
                         "openai_api_key", "jwt_secret", "webhook_secret"})
PROMPT_KEYS = frozenset({"prompt", "prompts", "messages", "completion", "content"})


def _redactor(log_prompts: bool):  # type: ignore[no-untyped-def]
    hidden = SECRET_KEYS if log_prompts else SECRET_KEYS | PROMPT_KEYS

    def redact(_logger, _name, event):  # type: ignore[no-untyped-def]
        for k in hidden.intersection(event):
            event[k] = "[redacted]"
        return event

    return redact


def configure_logging(level: str = "INFO", *, json: bool = True, log_prompts: bool = False) -> None:
    shared = [
        structlog.contextvars.merge_contextvars,
        add_trace_id,
        _redactor(log_prompts),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Standard-library loggers (temporalio, uvicorn, alembic) go through the same renderer, so
    # every line on stderr is one JSON object.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.processors.format_exc_info],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn installs its own handlers
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    for noisy in ("httpx", "httpcore", "openai", "temporalio.activity", "temporalio.workflow"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


def add_trace_id(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current OpenTelemetry trace/span id, when there is one."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


@contextlib.contextmanager
def activity_log_context(task_id: str | None = None, step: int | None = None, **extra: Any) -> Iterator[None]:
    """Bind task_id, workflow_id, step, activity and attempt to every log line of the block.

    Use at the top of an activity: `with activity_log_context(inp.task_id, inp.index): ...`."""
    values: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    if activity.in_activity():
        info = activity.info()
        values.update(workflow_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt)
    if task_id is not None:
        values["task_id"] = task_id
    if step is not None:
        values["step"] = step
    with structlog.contextvars.bound_contextvars(**values):
        yield
