"""send_email: queue an email to someone. A side effect on the outside world, so every call
waits for a human to approve it (GET/POST /tasks/{id}/approvals).

There is no mail transport in this service: an approved email is recorded in the task's
outbox (its short-term memory, kind "note"), where a delivery integration can pick it up."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field

from durable_orchestrator.tools.provenance import SENDS_OUT
from durable_orchestrator.tools.registry import REGISTRY, ToolContext, ToolError, tool


class SendEmailArgs(BaseModel):
    to: str = Field(
        min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$", description="Recipient address."
    )
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=10_000)


@tool(
    REGISTRY,
    name="send_email",
    description="Send an email (queued to the outbox after a human approves it).",
    args=SendEmailArgs,
    timeout_secs=10.0,
    requires_approval=True,
    side_effect=True,
    capabilities={SENDS_OUT},
)
async def send_email(args: SendEmailArgs, ctx: ToolContext) -> str:
    if ctx.keep_note is None:
        raise ToolError("the outbox is not available")
    text = f"email to {args.to} · {args.subject}\n{args.body}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    await ctx.keep_note(f"outbox: {text}", f"email:{ctx.step_index}:{digest}")
    return f"email to {args.to} queued"
