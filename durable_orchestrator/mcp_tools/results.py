"""An MCP tool result as the text the LLM reads, cut to a size limit."""

from __future__ import annotations

import json
from typing import Any

import mcp_types


def result_text(result: mcp_types.CallToolResult) -> str:
    """Text blocks as they are; other blocks named by type (images are not sent to the LLM);
    structured content as JSON when the server sent no text."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.EmbeddedResource):
            text = getattr(block.resource, "text", None)
            parts.append(text if text is not None else f"[resource {block.resource.uri}]")
        else:
            mime = getattr(block, "mime_type", None)
            parts.append(f"[{block.type} content{f' ({mime})' if mime else ''} omitted]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, default=str))
    return "\n".join(parts)


def capped(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return (
        text[:limit]
        + f"\n[…truncated: the result had {len(text)} characters, the limit is {limit} "
        "(ORCH_MCP_MAX_RESULT_CHARS)]"
    )


def schema_problem(schema: Any) -> str | None:
    """Why an input schema cannot be offered to the LLM, or None when it can."""
    import jsonschema

    if not isinstance(schema, dict):
        return "input schema is not a JSON object"
    if schema.get("type") != "object":
        return f"input schema must have type 'object', not {schema.get('type')!r}"
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return f"input schema is not valid JSON Schema at {where}: {exc.message}"
    return None
