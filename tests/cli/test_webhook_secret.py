"""`orchestrator up` gives each data dir its own webhook secret instead of a shared default."""

from __future__ import annotations

import stat
from pathlib import Path

from durable_orchestrator.cli.up import data_dir_webhook_secret


def test_each_data_dir_gets_its_own_secret_kept_across_restarts(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    first = data_dir_webhook_secret(tmp_path / "a")
    assert len(first) >= 32
    assert data_dir_webhook_secret(tmp_path / "a") == first  # the same after a restart
    (tmp_path / "b").mkdir()
    assert data_dir_webhook_secret(tmp_path / "b") != first
    mode = stat.S_IMODE((tmp_path / "a" / "webhook-secret").stat().st_mode)
    assert mode == 0o600
