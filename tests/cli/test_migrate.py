"""`orchestrator migrate` on the embedded PostgreSQL of a data dir, DATABASE_URL unset."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from durable_orchestrator.data.engine import alembic_config, create_engine
from durable_orchestrator.devstack import EmbeddedPostgres
from tests.cli.test_up import REPO, _cli
from tests.utils import service_dir

# Starts processes of its own: the `system` tier (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("subprocesses")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(REPO)
    return env


async def _revisions(url: str) -> list[str]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            if not await conn.run_sync(lambda c: sa.inspect(c).has_table("alembic_version")):
                return []
            rows = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            return [r[0] for r in rows]
    finally:
        await engine.dispose()


def test_migrate_brings_the_data_dirs_database_to_head() -> None:
    with service_dir() as root:
        data_dir = root / "data"
        # The server a running `up` would have started, on a fresh (unmigrated) database.
        pg = EmbeddedPostgres(data_dir / "pg")
        url = pg.start()
        try:
            assert asyncio.run(_revisions(url)) == []
            result = _cli("migrate", "--data-dir", str(data_dir), env=_env())
            assert result.returncode == 0, result.stdout + result.stderr
            assert "latest revision" in result.stdout
            heads = ScriptDirectory.from_config(alembic_config(url)).get_heads()
            assert asyncio.run(_revisions(url)) == heads
        finally:
            pg.stop()


def test_migrate_without_database_url_or_running_up_says_how(tmp_path: Path) -> None:
    result = _cli("migrate", "--data-dir", str(tmp_path), env=_env())
    assert result.returncode == 1
    assert f"no running `orchestrator up` found in {tmp_path}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
