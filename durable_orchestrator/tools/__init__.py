"""Tools the agents may call. Importing this package registers the built-ins in REGISTRY.

Add a tool: create `durable_orchestrator/tools/<name>.py` with an arguments model and an `@tool(REGISTRY, ...)`
handler, import it below, and list its name in the agents that may use it (planner/agents.py)."""

from durable_orchestrator.tools import (  # noqa: F401  (imported for their registrations)
    calculator,
    current_time,
    http_get,
    memory_search,
    send_email,
    write_note,
)
from durable_orchestrator.tools.registry import (
    REGISTRY,
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolRejected,
    tool,
)

__all__ = ["REGISTRY", "Tool", "ToolContext", "ToolError", "ToolRegistry", "ToolRejected", "tool"]
