"""The OpenAI wire format: chat.completion bodies with usage, and api.openai.com-shaped errors."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.responses import JSONResponse, Response

from fake_openai.replies import JSON, Reply, default_reply, prompt_tokens

DEFAULT_MODEL = "fake-model"

# status -> (error.type, error.code), as api.openai.com sends them.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", "timeout"),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
}


def completion(body: JSON, model: str, reply: Reply, *, completion_id: int, call_ids: Any) -> JSON:
    """The chat.completion body for a 200 `reply`; `call_ids` yields tool call numbers."""
    content = reply.content
    if content is None and not reply.tool_calls:
        content = default_reply(body).content
    message: JSON = {"role": "assistant", "content": content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{next(call_ids)}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            for name, arguments in reply.tool_calls
        ]
    produced = content or json.dumps(message.get("tool_calls") or "")
    prompt = reply.prompt_tokens if reply.prompt_tokens is not None else prompt_tokens(body)
    answer = (
        reply.completion_tokens
        if reply.completion_tokens is not None
        else max(1, len(produced) // 4)
    )
    return {
        "id": f"chatcmpl-fake{completion_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.answer_model or model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": answer,
            "total_tokens": prompt + answer,
        },
    }


def error_response(status: int, message: str | None, headers: dict[str, str] | None) -> Response:
    kind, code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    error = {
        "message": message or f"fake error {status}",
        "type": kind,
        "param": None,
        "code": code,
    }
    return JSONResponse({"error": error}, status_code=status, headers=headers)
