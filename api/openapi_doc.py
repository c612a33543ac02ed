"""The parts of the OpenAPI document that depend on the operator's settings, filled in when the
app builds its document: the API enforces these limits, so the document must state them.

- `TaskCreate.webhook_url`: the pattern of `api/webhook_urls.py` (null only, when no host is
  allowed), and examples the API would refuse dropped;
- `POST /tasks?wait=`: at most ORCH_MAX_WAIT_SECS.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from api.webhook_urls import url_pattern
from durable_orchestrator.settings import Settings


def apply_settings(app: FastAPI, settings: Settings) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _webhook_url(schema, url_pattern(settings.webhook_allowed_hosts))
            _wait(schema, settings.max_wait_secs)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _webhook_url(schema: dict[str, Any], pattern: str | None) -> None:
    model = schema["components"]["schemas"]["TaskCreate"]
    field = model["properties"]["webhook_url"]
    for example in model.get("examples", []):
        url = example.get("webhook_url")
        if url is not None and not (pattern and re.fullmatch(pattern, url)):
            del example["webhook_url"]
    for option in field.get("anyOf", []):
        if option.get("type") == "string":
            if pattern is None:
                field["anyOf"] = [{"type": "null"}]
            else:
                option["pattern"] = pattern


def _wait(schema: dict[str, Any], max_wait_secs: float) -> None:
    for param in schema["paths"]["/tasks"]["post"].get("parameters", []):
        if param["name"] == "wait":
            for option in param["schema"].get("anyOf", [param["schema"]]):
                if option.get("type") in ("number", "integer"):
                    option["maximum"] = max_wait_secs
