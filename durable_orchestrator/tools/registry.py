"""The tool registry: what a tool is, how its arguments are checked, and the built-ins.

A tool is a name, a description, a pydantic model for its arguments (its JSON schema is what
the LLM sees in the openai ``tools`` parameter), an async handler, a timeout and two flags:
``requires_approval`` (a human must approve each call before it runs) and ``side_effect``
(it changes something outside the task; documentation for reviewers and the UI), and its
``capabilities`` for the prompt-injection policy (tools/provenance.py): whether it reads the
user's private data, brings untrusted content in, or sends data out.

A tool from an MCP server (durable_orchestrator/mcp_tools/) has no pydantic model: its
``json_schema`` is the server's input schema, arguments are checked against it with jsonschema
and reach the handler as a dict; ``origin`` is ``mcp:<server>`` and ``agents`` lists the agents
its configuration allows (built-ins are allowed by each agent's own tool list instead).

Handlers receive the validated arguments and a :class:`ToolContext` with worker-scoped
dependencies. They return text (or something JSON-serialisable) for the LLM, and raise
:class:`ToolError` for an expected failure the LLM should read ("host not allowed").
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

from durable_orchestrator.settings import Settings

MemorySearch = Callable[[str, str, int], Awaitable[list[dict[str, Any]]]]
"""(user_id, query, limit) -> [{"text": ..., "score": ..., ...}]: long-term memory lookup."""

NoteKeeper = Callable[[str, str], Awaitable[None]]
"""(content, dedupe_key) -> None: keep a note in the task's short-term memory, once per key."""


class ToolError(Exception):
    """An expected failure; its message goes back to the LLM as the tool result."""


@dataclass
class ToolContext:
    task_id: str
    user_id: str
    step_index: int
    settings: Settings
    # Injected by the tool activity, so tools need no database or memory module of their own.
    keep_note: NoteKeeper | None = None
    memory_search: MemorySearch | None = None
    # Labels the handler found in its own result beyond what its capabilities imply (a
    # memory that was made from fetched content adds "untrusted").
    labels: set[str] = field(default_factory=set)


Handler = Callable[[Any, ToolContext], Awaitable[Any]]


BUILTIN = "builtin"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[BaseModel] | None
    handler: Handler
    timeout_secs: float = 10.0
    requires_approval: bool = False
    side_effect: bool = False
    origin: str = BUILTIN
    json_schema: Mapping[str, Any] | None = None  # instead of `args`, for tools defined elsewhere
    agents: tuple[str, ...] = ()  # agents allowed by the tool's own configuration ("*" = all)
    capabilities: frozenset[str] = frozenset()

    def parameters(self) -> dict[str, Any]:
        if self.json_schema is not None:
            return dict(self.json_schema)
        assert self.args is not None, f"tool {self.name!r} has neither args nor json_schema"
        schema = self.args.model_json_schema()
        schema.pop("title", None)
        return schema

    def openai_schema(self) -> dict[str, Any]:
        return self._openai_schema

    @functools.cached_property
    def _openai_schema(self) -> dict[str, Any]:
        # Built once per tool: pydantic's JSON schema generation was a few percent of a worker's
        # CPU when it ran on every LLM turn.
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters()},
        }


class ToolRejected(ValueError):
    """A call that must not run: unknown tool, not allowed for the agent, invalid arguments."""


@dataclass
class ToolRegistry:
    tools: dict[str, Tool] = field(default_factory=dict)
    #: Handler executions by tool name (tests assert rejected calls never ran; metrics).
    executions: Counter[str] = field(default_factory=Counter)

    def register(self, tool: Tool) -> Tool:
        if tool.name in self.tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        self.tools[tool.name] = tool
        return tool

    def layered(self) -> ToolRegistry:
        """A registry with this one's tools that more can be added to without changing this
        one; handler executions are still counted here."""
        return ToolRegistry(tools=dict(self.tools), executions=self.executions)

    def replace_origin(self, origin: str, tools: Iterable[Tool]) -> None:
        """Swap every tool of `origin` (an MCP server) for `tools`; other origins are kept."""
        new = list(tools)
        for t in new:
            if t.origin != origin:
                raise ValueError(f"tool {t.name!r} is from {t.origin!r}, not {origin!r}")
            if t.name in self.tools and self.tools[t.name].origin != origin:
                raise ValueError(f"tool {t.name!r} is already registered by {self.tools[t.name].origin!r}")
        keep = {n: t for n, t in self.tools.items() if t.origin != origin}
        self.tools.clear()
        self.tools.update(keep)
        self.tools.update({t.name: t for t in new})

    def allowed_for(self, agent: str, agent_tools: Iterable[str]) -> tuple[str, ...]:
        """Names of the registered tools an agent may call: those its definition lists, then
        those whose own configuration names the agent (or `*`)."""
        listed = tuple(n for n in agent_tools if n in self.tools)
        extra = tuple(
            n for n, t in self.tools.items()
            if n not in listed and (agent in t.agents or "*" in t.agents)
        )
        return listed + extra

    def get(self, name: str) -> Tool:
        try:
            return self.tools[name]
        except KeyError:
            raise ToolRejected(
                f"unknown tool {name!r}; registered tools: {', '.join(sorted(self.tools))}"
            ) from None

    def openai_tools(self, names: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
        return [self.tools[n].openai_schema() for n in names if n in self.tools]

    def validate(self, name: str, raw_arguments: str, allowed: tuple[str, ...]) -> tuple[Tool, Any]:
        """The tool and its parsed arguments, or ToolRejected worded for the LLM."""
        tool = self.get(name)
        if name not in allowed:
            raise ToolRejected(
                f"tool {name!r} is not allowed for this agent; allowed: {', '.join(allowed) or 'none'}"
            )
        try:
            data = json.loads(raw_arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ToolRejected(f"arguments for {name!r} are not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ToolRejected(f"arguments for {name!r} must be a JSON object")
        if tool.json_schema is not None:
            return tool, _check_json_schema(name, tool.json_schema, data)
        assert tool.args is not None
        try:
            return tool, tool.args.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            raise ToolRejected(f"invalid arguments for {name!r}: {problems}") from None

    async def execute(self, tool: Tool, args: Any, ctx: ToolContext) -> str:
        self.executions[tool.name] += 1
        result = await tool.handler(args, ctx)
        return result if isinstance(result, str) else json.dumps(result, default=str)


def _check_json_schema(name: str, schema: Mapping[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.absolute_path) or 'arguments'}: {e.message}" for e in errors[:5]
        )
        raise ToolRejected(f"invalid arguments for {name!r}: {problems}")
    return data


def tool(
    registry: ToolRegistry,
    *,
    name: str,
    description: str,
    args: type[BaseModel],
    timeout_secs: float = 10.0,
    requires_approval: bool = False,
    side_effect: bool = False,
    capabilities: frozenset[str] | set[str] = frozenset(),
) -> Callable[[Handler], Handler]:
    """Decorator: register the decorated async function as a tool."""

    def wrap(fn: Handler) -> Handler:
        registry.register(
            Tool(
                name, description, args, fn, timeout_secs=timeout_secs, requires_approval=requires_approval,
                side_effect=side_effect, capabilities=frozenset(capabilities),
            )
        )
        return fn

    return wrap


REGISTRY = ToolRegistry()
"""The process-wide registry; `tools/__init__.py` imports the built-ins, which register here."""
