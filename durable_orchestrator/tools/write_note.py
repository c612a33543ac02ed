"""write_note: keep a note in the task's short-term memory for later steps."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

from durable_orchestrator.tools.registry import REGISTRY, ToolContext, ToolError, tool


class WriteNoteArgs(BaseModel):
    note: str = Field(min_length=1, max_length=4000, description="What later steps should know.")


@tool(
    REGISTRY,
    name="write_note",
    description="Save a short note to this task's memory; later steps see it in their prompt.",
    args=WriteNoteArgs,
    timeout_secs=5.0,
)
async def write_note(args: WriteNoteArgs, ctx: ToolContext) -> str:
    if ctx.keep_note is None:
        raise ToolError("short-term memory is not available")
    digest = hashlib.sha256(args.note.encode()).hexdigest()[:16]
    await ctx.keep_note(args.note, f"note:{ctx.step_index}:{digest}")
    return "noted"
