"""The tool catalog (`tool_catalog`): each worker's MCP tools, replaced per origin
(`mcp:<server>`) whenever the worker re-lists that server; `GET /tools` reads it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from durable_orchestrator.data.engine import read
from durable_orchestrator.data.tables import CatalogTool


async def replace_origin(engine: AsyncEngine, origin: str, rows: Sequence[dict[str, Any]]) -> None:
    """Make the catalog's tools of `origin` exactly `rows` (dicts of CatalogTool fields)."""
    names = [r["name"] for r in rows]
    async with engine.begin() as conn:
        await conn.execute(
            sa.delete(CatalogTool).where(
                CatalogTool.origin == origin, CatalogTool.name.not_in(names)
            )
        )
        if rows:
            stmt = pg_insert(CatalogTool).values([{**r, "origin": origin} for r in rows])
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[CatalogTool.name],
                    set_={
                        c: stmt.excluded[c]
                        for c in (
                            "origin",
                            "description",
                            "parameters",
                            "agents",
                            "requires_approval",
                            "timeout_secs",
                            "capabilities",
                        )
                    }
                    | {"updated_at": sa.func.now()},
                )
            )


async def list_tools(engine: AsyncEngine) -> list[CatalogTool]:
    async with read(engine) as conn:
        result = await conn.execute(select(CatalogTool).order_by(CatalogTool.name))
        return [CatalogTool.model_validate(dict(r._mapping)) for r in result]
