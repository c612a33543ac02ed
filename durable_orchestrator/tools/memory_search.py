"""memory_search: look up results of the user's earlier tasks in long-term memory.

The search itself is injected (ToolContext.memory_search) by whoever builds the worker, so
this tool works with any long-term memory backend, and says so plainly when there is none."""

from __future__ import annotations

from pydantic import BaseModel, Field

from durable_orchestrator.tools.provenance import READS_PRIVATE, UNTRUSTED
from durable_orchestrator.tools.registry import REGISTRY, ToolContext, tool

NOT_AVAILABLE = "long-term memory is not available"
FETCHED_MARK = "[made from fetched content] "


def from_fetched_content(metadata: object) -> bool:
    """A memory written from a task that read untrusted content (see remember_result)."""
    return isinstance(metadata, dict) and UNTRUSTED in (metadata.get("labels") or ())


class MemorySearchArgs(BaseModel):
    query: str = Field(min_length=1, max_length=1000, description="What to look for.")
    limit: int = Field(5, ge=1, le=20, description="How many results at most.")


@tool(
    REGISTRY,
    name="memory_search",
    description="Search the long-term memory of this user's earlier tasks.",
    args=MemorySearchArgs,
    timeout_secs=10.0,
    capabilities={READS_PRIVATE},
)
async def memory_search(args: MemorySearchArgs, ctx: ToolContext) -> str:
    if ctx.memory_search is None:
        return NOT_AVAILABLE
    hits = await ctx.memory_search(ctx.user_id, args.query, args.limit)
    if not hits:
        return "no matching memories"
    lines = []
    for h in hits:
        score = h.get("score")
        prefix = f"({score:.2f}) " if isinstance(score, int | float) else ""
        if from_fetched_content(h.get("metadata")):
            ctx.labels.add(UNTRUSTED)
            prefix += FETCHED_MARK
        lines.append(f"- {prefix}{h.get('text') or h.get('content') or h}")
    return "\n".join(lines)
