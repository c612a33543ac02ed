"""`orchestrator keys revoke` refuses a prefix that names two live keys, and says which."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

from durable_orchestrator.auth import api_keys
from durable_orchestrator.data import keys

ROOT = Path(__file__).resolve().parents[2]


async def test_revoke_by_an_ambiguous_prefix_fails_naming_the_keys(
    engine, pg_url, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    user, prefix = f"u-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    ids = [f"key_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    async with engine.begin() as conn:
        await keys.add_user(conn, user)
        for key_id in ids:
            await keys.add_key(
                conn,
                key_id=key_id,
                user_id=user,
                prefix=prefix,
                key_hash=f"h-{key_id}",
                name=None,
                scopes=["tasks:read"],
                expires_at=None,
            )
    env = {**os.environ, "DATABASE_URL": pg_url, "PYTHONPATH": str(ROOT)}
    out = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "durable_orchestrator.cli",
            "keys",
            "revoke",
            prefix,
            "--data-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "matches 2 active keys" in out.stderr and all(i in out.stderr for i in ids)
    assert [k.revoked_at for k in await api_keys.list_keys(engine, user)] == [None, None]
