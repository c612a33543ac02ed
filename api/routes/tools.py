"""/tools: every tool an agent may call, built-in or from an MCP server, with its origin.

Built-ins come from this process's registry; MCP tools from the catalog the workers write
when they list their servers (durable_orchestrator/data/tool_catalog.py), so the API holds no
MCP connection and lists what the workers actually registered."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import EngineDep, SettingsDep, require
from api.errors import ERROR_RESPONSES, APIError
from durable_orchestrator.auth.api_keys import Principal
from durable_orchestrator.data import tool_catalog
from durable_orchestrator.mcp_tools.config import catalog_freshness_secs
from durable_orchestrator.tools import REGISTRY
from planner.agents import AGENTS

router = APIRouter(prefix="/tools", tags=["tools"], responses=ERROR_RESPONSES)

ReadUser = Annotated[Principal, require("tasks:read")]


class ToolPublic(BaseModel):
    name: str
    origin: str = Field(description="`builtin` or `mcp:<server>`.")
    description: str
    parameters: dict[str, Any] = Field(
        description="JSON Schema of the arguments, as the LLM sees it."
    )
    agents: list[str] = Field(description="Agents that may call the tool.")
    requires_approval: bool
    timeout_secs: float
    capabilities: dict[str, Any] = Field(default_factory=dict)


class ToolList(BaseModel):
    items: list[ToolPublic]


def _agents_of(name: str, configured: list[str]) -> list[str]:
    listed = [a.name for a in AGENTS.values() if name in a.tools]
    if "*" in configured:
        return list(AGENTS)
    return list(dict.fromkeys([*listed, *(a for a in configured if a in AGENTS)]))


@router.get("", summary="Tools agents may call, with their origin")
async def list_tools(
    _user: ReadUser,
    engine: EngineDep,
    settings: SettingsDep,
    agent: Annotated[str | None, Query(description="Only the tools this agent may call.", json_schema_extra={"enum": list(AGENTS)})] = None,
) -> ToolList:
    if agent is not None and agent not in AGENTS:
        raise APIError(
            422,
            "validation_error",
            f"invalid request: agent: unknown agent {agent!r}; registered: {', '.join(AGENTS)}",
        )
    items = [
        ToolPublic(
            name=t.name,
            origin=t.origin,
            description=t.description,
            parameters=t.parameters(),
            agents=_agents_of(t.name, list(t.agents)),
            requires_approval=t.requires_approval,
            timeout_secs=t.timeout_secs,
            capabilities=dict.fromkeys(sorted(t.capabilities), True),
        )
        for t in REGISTRY.tools.values()
    ]
    items += [
        ToolPublic(
            name=r.name,
            origin=r.origin,
            description=r.description,
            parameters=r.parameters,
            agents=_agents_of(r.name, r.agents),
            requires_approval=r.requires_approval,
            timeout_secs=r.timeout_secs,
            capabilities=r.capabilities,
        )
        for r in await tool_catalog.list_tools(engine, catalog_freshness_secs(settings))
        if r.name not in REGISTRY.tools
    ]
    if agent is not None:
        items = [t for t in items if agent in t.agents]
    return ToolList(items=sorted(items, key=lambda t: (t.origin != "builtin", t.origin, t.name)))
