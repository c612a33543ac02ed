"""Which `webhook_url` values a task may carry, as one regular expression built from
ORCH_WEBHOOK_ALLOWED_HOSTS: the API refuses what it does not match, and the OpenAPI document
carries the same pattern, so the two cannot disagree about what is accepted."""

from __future__ import annotations

import re


def _caseless(text: str) -> str:
    # No inline flags: JSON Schema patterns are ECMA-262, which has no (?i).
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in text)


def url_pattern(allowed_hosts: list[str]) -> str | None:
    """None when no host is allowed (then no webhook_url is accepted)."""
    if not allowed_hosts:
        return None
    hosts = "|".join(_caseless(h) for h in sorted({h.lower() for h in allowed_hosts}))
    return f"^{_caseless('http')}[sS]?://(?:{hosts})(?::[0-9]{{1,5}})?(?:[/?#][^\\s\\u0000]*)?$"
