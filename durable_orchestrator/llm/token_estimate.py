"""How many prompt tokens a request will cost, before sending it: budgets reserve it, the
rate limiter takes it from the tokens-per-minute bucket, and the offline provider reports it.

Rough, and on the pessimistic side: about four characters per token over everything sent (each
message's content as JSON, its tool calls, and `extra` such as the tool definitions), rounded
up. The real count comes back with the answer and is what the ledger records."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any


def estimate_prompt_tokens(messages: list[dict[str, Any]], extra: Any = None) -> int:
    chars = sum(len(json.dumps(m.get("content") or "")) for m in messages)
    chars += sum(len(json.dumps(m.get("tool_calls"))) for m in messages if m.get("tool_calls"))
    if extra:
        chars += len(json.dumps(extra))
    return chars // 4 + 1


# Tokenizers of OpenAI's model families (tiktoken's prefix table, which bpe-openai shares
# without its snapshot names); bpe-openai ships the vocabularies, so nothing is downloaded.
_ENCODING_BY_PREFIX = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
)
# OpenAI's documented framing: each message costs a few tokens beyond its text, and the reply
# is primed with a few more.
_PER_MESSAGE = 4
_PER_REPLY = 3


def encoding_name(model: str) -> str | None:
    """The tokenizer of `model` (provider prefix and snapshot date allowed), if we know it."""
    base = model.rsplit("/", 1)[-1]
    for prefix, name in _ENCODING_BY_PREFIX:
        if base.startswith(prefix):
            return name
    return None


@lru_cache
def _encoding(name: str) -> Any:
    import bpe_openai  # loads a vocabulary (~70 ms) only when a budget first needs it

    return bpe_openai.get_encoding(name)


def _texts(messages: list[dict[str, Any]], extra: Any) -> list[str]:
    texts = []
    for m in messages:
        content = m.get("content")
        texts.append(content if isinstance(content, str) else json.dumps(content or ""))
        if m.get("tool_calls"):
            texts.append(json.dumps(m["tool_calls"]))
    if extra:
        texts.append(json.dumps(extra))
    return texts


def count_prompt_tokens(model: str, messages: list[dict[str, Any]], extra: Any = None) -> int:
    """Prompt tokens of a request, for a budget reservation: counted with the model's own
    tokenizer when we know it, else a conservative estimate (one token per two UTF-8 bytes:
    English averages about four bytes per token, CJK text about three)."""
    texts = _texts(messages, extra)
    overhead = _PER_MESSAGE * len(messages) + _PER_REPLY
    name = encoding_name(model)
    if name is None:
        return sum(len(t.encode()) for t in texts) // 2 + 1 + overhead
    encoding = _encoding(name)
    return sum(len(encoding.encode(t, disallowed_special=())) for t in texts) + overhead
