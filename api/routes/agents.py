"""/agents: the agents a task's steps may be given to (by the planner, or by the client with
`agent` or `plan` on POST /tasks), with the tools each may call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import SettingsDep, require
from api.errors import ERROR_RESPONSES
from durable_orchestrator.auth.api_keys import Principal
from durable_orchestrator.tools import REGISTRY
from planner.agents import AGENTS, DEFAULT_AGENT

router = APIRouter(prefix="/agents", tags=["agents"], responses=ERROR_RESPONSES)

ReadUser = Annotated[Principal, require("tasks:read")]


class ToolPublic(BaseModel):
    name: str
    description: str
    requires_approval: bool = Field(description="A human approves each call before it runs.")
    side_effect: bool = Field(description="It changes something outside the task.")


class AgentPublic(BaseModel):
    name: str = Field(description="What `agent` in POST /tasks (or in a plan's step) names.")
    description: str
    model: str = Field(description="The model its steps call.")
    tools: list[ToolPublic]


class AgentList(BaseModel):
    items: list[AgentPublic]
    default_agent: str = Field(description="The agent of a planner's fallback plan.")


@router.get("", response_model=AgentList, summary="List the agents and their tools")
async def list_agents(_: ReadUser, settings: SettingsDep) -> AgentList:
    return AgentList(
        items=[
            AgentPublic(
                name=a.name,
                description=a.description,
                model=a.model or settings.model,
                tools=[
                    ToolPublic(
                        name=t.name,
                        description=t.description,
                        requires_approval=t.requires_approval,
                        side_effect=t.side_effect,
                    )
                    for t in (REGISTRY.tools[n] for n in a.tools if n in REGISTRY.tools)
                ],
            )
            for a in AGENTS.values()
        ],
        default_agent=DEFAULT_AGENT,
    )
