"""The tool registry and the built-in tools, without the engine."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from durable_orchestrator.settings import Settings
from durable_orchestrator.tools import (
    REGISTRY,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolRejected,
    tool,
)
from durable_orchestrator.tools.calculator import evaluate
from durable_orchestrator.tools.http_get import http_get
from durable_orchestrator.tools.memory_search import NOT_AVAILABLE, MemorySearchArgs, memory_search


def ctx(**kw) -> ToolContext:  # type: ignore[no-untyped-def]
    return ToolContext(task_id="t", user_id="u", step_index=0, settings=Settings(**kw))


@pytest.mark.parametrize(
    "expr, value",
    [("2+3", 5), ("(2+3)*4", 20), ("2**10", 1024), ("-7 // 2", -4), ("sqrt(16)", 4.0), ("max(1, 5, 3)", 5)],
)
def test_calculator_evaluates(expr: str, value: float) -> None:
    assert evaluate(expr) == value


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "(1).__class__",
        "open('/etc/passwd')",
        "[x for x in range(10)]",
        "lambda: 1",
        "9**9**9",
        "1/0",
        "'a' * 3",
        "2 +",
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expr: str) -> None:
    with pytest.raises(ToolError):
        evaluate(expr)


def test_registry_validates_name_permission_and_arguments() -> None:
    with pytest.raises(ToolRejected, match="unknown tool 'nope'"):
        REGISTRY.validate("nope", "{}", ("nope",))
    with pytest.raises(ToolRejected, match="not allowed"):
        REGISTRY.validate("calculator", '{"expression": "1"}', ("write_note",))
    with pytest.raises(ToolRejected, match="not valid JSON"):
        REGISTRY.validate("calculator", "{oops", ("calculator",))
    with pytest.raises(ToolRejected, match="expression"):
        REGISTRY.validate("calculator", '{"expression": ""}', ("calculator",))
    tool_, args = REGISTRY.validate("calculator", '{"expression": "1+1"}', ("calculator",))
    assert tool_.name == "calculator" and args.expression == "1+1"  # type: ignore[attr-defined]


def test_every_builtin_has_an_openai_schema_and_the_email_needs_approval() -> None:
    schemas = REGISTRY.openai_tools(sorted(REGISTRY.tools))
    assert {s["function"]["name"] for s in schemas} >= {
        "calculator", "current_time", "http_get", "write_note", "memory_search", "send_email"
    }
    for s in schemas:
        assert s["type"] == "function" and s["function"]["parameters"]["type"] == "object"
        json.dumps(s)
    assert REGISTRY.tools["send_email"].requires_approval and REGISTRY.tools["send_email"].side_effect
    assert not any(t.requires_approval for n, t in REGISTRY.tools.items() if n != "send_email")


async def test_a_tool_in_a_few_lines() -> None:
    registry = ToolRegistry()

    class EchoArgs(BaseModel):
        text: str

    @tool(registry, name="echo", description="Repeat the text.", args=EchoArgs)
    async def echo(args: EchoArgs, ctx: ToolContext) -> str:
        return args.text

    t, args = registry.validate("echo", '{"text": "hi"}', ("echo",))
    assert await registry.execute(t, args, ctx()) == "hi"
    assert registry.executions["echo"] == 1
    with pytest.raises(ValueError, match="already registered"):
        tool(registry, name="echo", description="again", args=EchoArgs)(echo)


async def test_http_get_refuses_hosts_not_on_the_allow_list() -> None:
    from durable_orchestrator.tools.http_get import HttpGetArgs

    with pytest.raises(ToolError, match="none configured"):
        await http_get(HttpGetArgs(url="http://127.0.0.1:1/"), ctx())
    with pytest.raises(ToolError, match="not allowed"):
        await http_get(HttpGetArgs(url="http://evil.example/"), ctx(http_get_allowed_hosts="good.example"))
    with pytest.raises(ToolError, match="only http"):
        await http_get(HttpGetArgs(url="file:///etc/passwd"), ctx(http_get_allowed_hosts="good.example"))


async def test_memory_search_without_and_with_long_term_memory() -> None:
    args = MemorySearchArgs(query="tea")
    assert await memory_search(args, ctx()) == NOT_AVAILABLE
    seen = []

    async def search(user_id: str, query: str, limit: int) -> list[dict]:
        seen.append((user_id, query, limit))
        return [{"text": "green tea is unoxidised", "score": 0.91}]

    c = ctx()
    c.memory_search = search
    assert await memory_search(args, c) == "- (0.91) green tea is unoxidised"
    assert seen == [("u", "tea", 5)]
