"""The agent registry: every agent the planner may assign, with its system prompt."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Agent:
    name: str
    description: str
    system_prompt: str
    tools: tuple[str, ...] = field(default_factory=tuple)
    model: str | None = None  # overrides ORCH_MODEL for this agent


_AGENTS = (
    Agent(
        name="researcher",
        description="Finds and summarises facts relevant to the task; uses memory search.",
        system_prompt=(
            "You are a meticulous researcher. Gather the facts the task needs, cite where "
            "each came from, and say plainly what you could not find."
        ),
        tools=("memory_search", "http_get", "calculator", "current_time", "write_note"),
    ),
    Agent(
        name="analyst",
        description="Works with numbers and structured data; computes, compares, concludes.",
        system_prompt=(
            "You are a careful analyst. Work from the material you are given, show the "
            "calculations that matter, and state conclusions with their confidence."
        ),
        tools=("calculator", "current_time", "write_note"),
    ),
    Agent(
        name="writer",
        description="Turns findings into the clear, well-structured final answer for the user; "
        "can send it by email (a human approves each email).",
        system_prompt=(
            "You are a clear technical writer. Produce the deliverable the user asked for "
            "from the material you are given, well structured and without filler."
        ),
        tools=("write_note", "send_email"),
    ),
    Agent(
        name="reviewer",
        description="Checks a draft for errors, gaps and unsupported claims; proposes fixes.",
        system_prompt=(
            "You are a critical reviewer. Check the material for factual errors, gaps and "
            "unsupported claims, and return a corrected version with a short list of changes."
        ),
        tools=("calculator", "memory_search"),
    ),
)

AGENTS: dict[str, Agent] = {a.name: a for a in _AGENTS}
DEFAULT_AGENT = "writer"


def get_agent(name: str) -> Agent:
    try:
        return AGENTS[name]
    except KeyError:
        raise KeyError(f"unknown agent {name!r}; registered: {', '.join(AGENTS)}") from None
