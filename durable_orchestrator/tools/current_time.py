"""current_time: the current date and time, in UTC or a named IANA time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from durable_orchestrator.tools.registry import REGISTRY, ToolContext, ToolError, tool


class CurrentTimeArgs(BaseModel):
    timezone: str = Field("UTC", max_length=64, description="IANA zone, e.g. 'Europe/Paris'.")


@tool(
    REGISTRY,
    name="current_time",
    description="The current date and time (ISO 8601) in the given time zone.",
    args=CurrentTimeArgs,
    timeout_secs=2.0,
)
async def current_time(args: CurrentTimeArgs, ctx: ToolContext) -> str:
    try:
        tz = UTC if args.timezone.upper() == "UTC" else ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {args.timezone!r}") from None
    return datetime.now(tz).isoformat(timespec="seconds")
