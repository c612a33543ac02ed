"""The tool catalog (`tool_catalog`): each worker's MCP tools, replaced per origin
(`mcp:<server>`) whenever the worker re-lists that server; `GET /tools` reads it.

Workers re-list every ORCH_MCP_REFRESH_INTERVAL_SECS, which renews `updated_at`; rows left
unrenewed for a few intervals belong to servers no running worker lists any more (removed from
the configuration, or down): they are not shown, and a starting worker deletes them."""

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


def _renewed_within(secs: float) -> Any:
    return CatalogTool.updated_at > sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, secs)


async def list_tools(engine: AsyncEngine, renewed_within_secs: float) -> list[CatalogTool]:
    async with read(engine) as conn:
        result = await conn.execute(
            select(CatalogTool)
            .where(_renewed_within(renewed_within_secs))
            .order_by(CatalogTool.name)
        )
        return [CatalogTool.model_validate(dict(r._mapping)) for r in result]


async def delete_stale(engine: AsyncEngine, renewed_within_secs: float) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            sa.delete(CatalogTool).where(sa.not_(_renewed_within(renewed_within_secs)))
        )
        return result.rowcount or 0
