"""Classification of provider failures: what Temporal may retry, and when."""

from __future__ import annotations

import email.utils
import time
from datetime import timedelta

import httpx
import openai
import pytest

from durable_orchestrator.llm.errors import classify, retry_after

REQ = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


def status_error(status: int, headers: dict[str, str] | None = None, message: str = "nope"):  # type: ignore[no-untyped-def]
    body = {"error": {"message": message}}
    resp = httpx.Response(status, headers=headers, json=body, request=REQ)
    return openai.APIStatusError(message, response=resp, body=body)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable(status: int) -> None:
    err = classify(status_error(status))
    assert err.non_retryable is False
    assert err.type == f"LLMHTTP{status}"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_request_errors_are_not_retried_and_keep_the_provider_message(status: int) -> None:
    err = classify(status_error(status, message="context length exceeded"))
    assert err.non_retryable is True
    assert "context length exceeded" in str(err) and str(status) in str(err)


def test_retry_after_forms() -> None:
    assert classify(status_error(429, {"Retry-After": "2"})).next_retry_delay == timedelta(seconds=2)
    ms = classify(status_error(429, {"retry-after-ms": "1500", "Retry-After": "9"}))
    assert ms.next_retry_delay == timedelta(milliseconds=1500)  # the precise one wins
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    delay = retry_after(httpx.Headers({"Retry-After": date}))
    assert delay is not None and timedelta(seconds=25) < delay <= timedelta(seconds=30)
    assert classify(status_error(500)).next_retry_delay is None
    assert classify(status_error(400, {"Retry-After": "5"})).next_retry_delay is None


def test_timeouts_connection_errors_and_garbage_are_retryable() -> None:
    for exc, kind in [
        (openai.APITimeoutError(REQ), "LLMTimeout"),
        (openai.APIConnectionError(request=REQ), "LLMConnectionError"),
        (ValueError("provider returned no choices"), "LLMMalformedResponse"),
    ]:
        err = classify(exc)
        assert err.type == kind and err.non_retryable is False
