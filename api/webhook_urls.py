"""Which `webhook_url` values a task may carry, as one regular expression built from
ORCH_WEBHOOK_ALLOWED_HOSTS: the API refuses what it does not match, and the OpenAPI document
carries the same pattern, so the two cannot disagree about what is accepted."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI


def _caseless(text: str) -> str:
    # No inline flags: JSON Schema patterns are ECMA-262, which has no (?i).
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in text)


def url_pattern(allowed_hosts: list[str]) -> str | None:
    """None when no host is allowed (then no webhook_url is accepted)."""
    if not allowed_hosts:
        return None
    hosts = "|".join(_caseless(h) for h in sorted({h.lower() for h in allowed_hosts}))
    return f"^{_caseless('http')}[sS]?://(?:{hosts})(?::[0-9]{{1,5}})?(?:[/?#][^\\s\\u0000]*)?$"


def document(app: FastAPI, allowed_hosts: list[str]) -> None:
    """Put the pattern into TaskCreate.webhook_url of the app's OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        model = schema["components"]["schemas"]["TaskCreate"]
        field = model["properties"]["webhook_url"]
        pattern = url_pattern(allowed_hosts)
        for example in model.get("examples", []):  # an example must be one the API accepts
            url = example.get("webhook_url")
            if url is not None and not (pattern and re.fullmatch(pattern, url)):
                del example["webhook_url"]
        for option in field.get("anyOf", []):
            if option.get("type") == "string":
                if pattern is None:
                    field["anyOf"] = [{"type": "null"}]
                else:
                    option["pattern"] = pattern
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
