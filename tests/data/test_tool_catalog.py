"""The tool catalog (data/tool_catalog.py): replaced per origin, stale rows hidden and deleted."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.data import tool_catalog


def _row(name: str, **kw: object) -> dict[str, object]:
    return {
        "name": name,
        "description": "d",
        "parameters": {"type": "object"},
        "agents": ["analyst"],
        "requires_approval": False,
        "timeout_secs": 5.0,
        "capabilities": {},
        **kw,
    }


async def test_replace_origin_keeps_other_origins_and_drops_stale_rows(engine: AsyncEngine) -> None:
    tag = uuid.uuid4().hex[:8]
    a, b = f"mcp:a{tag}", f"mcp:b{tag}"
    await tool_catalog.replace_origin(engine, a, [_row(f"a1_{tag}"), _row(f"a2_{tag}")])
    await tool_catalog.replace_origin(engine, b, [_row(f"b1_{tag}")])
    await tool_catalog.replace_origin(engine, a, [_row(f"a2_{tag}", timeout_secs=9.0)])

    rows = {r.name: r for r in await tool_catalog.list_tools(engine, 60) if tag in r.name}
    assert sorted(rows) == [f"a2_{tag}", f"b1_{tag}"]
    assert rows[f"a2_{tag}"].timeout_secs == 9.0 and rows[f"a2_{tag}"].origin == a
    assert rows[f"b1_{tag}"].agents == ["analyst"] and rows[f"b1_{tag}"].parameters == {
        "type": "object"
    }

    await asyncio.sleep(0.3)  # the rows age past a 0.2 s window
    assert not [r for r in await tool_catalog.list_tools(engine, 0.2) if tag in r.name]
    assert await tool_catalog.delete_stale(engine, 0.2) >= 2
    assert not [r for r in await tool_catalog.list_tools(engine, 3600) if tag in r.name]
