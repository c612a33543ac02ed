"""Turn provider failures into Temporal errors: retryable or not, with the provider's own
Retry-After as `next_retry_delay`. Temporal does the retrying; nothing here loops."""

from __future__ import annotations

import email.utils
import time
from datetime import timedelta

import httpx
import openai
from temporalio.exceptions import ApplicationError

RETRYABLE_STATUS = frozenset({408, 409, 429})
NON_RETRYABLE_STATUS = frozenset({400, 401, 403, 404, 422})


def retry_after(headers: httpx.Headers | None) -> timedelta | None:
    """`retry-after-ms` (OpenAI's) wins over `Retry-After` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return timedelta(milliseconds=max(0.0, float(ms)))
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return timedelta(seconds=max(0.0, float(value)))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return timedelta(seconds=max(0.0, parsed.timestamp() - time.time()))


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return exc.message


def classify(exc: BaseException) -> ApplicationError:
    """Map any exception from an LLM call to an ApplicationError Temporal can act on."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"LLM provider returned HTTP {status}: {_provider_message(exc)}"
        if status in NON_RETRYABLE_STATUS:
            return ApplicationError(message, type=f"LLMHTTP{status}", non_retryable=True)
        retryable = status in RETRYABLE_STATUS or status >= 500
        return ApplicationError(
            message,
            type=f"LLMHTTP{status}",
            non_retryable=not retryable,
            next_retry_delay=retry_after(exc.response.headers) if retryable else None,
        )
    if isinstance(exc, openai.APITimeoutError):
        return ApplicationError(f"LLM request timed out: {exc}", type="LLMTimeout")
    if isinstance(exc, openai.APIConnectionError):
        return ApplicationError(f"LLM connection failed: {exc}", type="LLMConnectionError")
    # Raised by httpx itself, unwrapped, when a streamed answer breaks after its headers arrived.
    if isinstance(exc, httpx.TimeoutException):
        return ApplicationError(f"LLM stream stalled: {exc}", type="LLMTimeout")
    if isinstance(exc, httpx.TransportError):
        return ApplicationError(f"LLM stream broke off: {exc}", type="LLMConnectionError")
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        return ApplicationError(f"LLM returned a malformed response: {exc}", type="LLMMalformedResponse")
    return ApplicationError(f"LLM call failed: {type(exc).__name__}: {exc}", type="LLMError")
