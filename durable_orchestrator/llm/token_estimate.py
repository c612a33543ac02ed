"""How many prompt tokens a request will cost, before sending it: budgets reserve it, the
rate limiter takes it from the tokens-per-minute bucket, and the offline provider reports it.

Rough, and on the pessimistic side: about four characters per token over everything sent (each
message's content as JSON, its tool calls, and `extra` such as the tool definitions), rounded
up. The real count comes back with the answer and is what the ledger records."""

from __future__ import annotations

import json
from typing import Any


def estimate_prompt_tokens(messages: list[dict[str, Any]], extra: Any = None) -> int:
    chars = sum(len(json.dumps(m.get("content") or "")) for m in messages)
    chars += sum(len(json.dumps(m.get("tool_calls"))) for m in messages if m.get("tool_calls"))
    if extra:
        chars += len(json.dumps(extra))
    return chars // 4 + 1
