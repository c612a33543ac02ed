"""`orchestrator config` as an operator runs it (a subprocess with its own environment): the
settings in effect with their source, secrets masked, refusal of settings that would not start,
and `--reference`, which is what docs/configuration.md holds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from durable_orchestrator.cli.config import reference_markdown
from tests.cli.test_up import ORCHESTRATOR, REPO

# Starts processes of its own: the `system` tier (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("subprocesses")


def _config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "OPENAI_"))}
    clean = {k: v for k, v in clean.items() if k not in ("DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS")}
    return subprocess.run(
        [*ORCHESTRATOR, "config", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**clean, "PYTHONPATH": str(REPO), "COLUMNS": "200", **env},
    )


def _rows(stdout: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in stdout.splitlines():
        variable, rest = line.split(maxsplit=1)
        value, source = rest.rsplit(maxsplit=1)
        rows[variable] = (value.strip(), source)
    return rows


def test_config_prints_effective_settings_with_their_source() -> None:
    result = _config(
        DATABASE_URL="postgresql://app:hunter2@db.internal:5432/app",
        ORCH_MODEL_FALLBACKS="gpt-4.1-mini, gpt-4o",
        ORCH_MAX_TURNS="3",
        OPENAI_API_KEY="sk-very-secret",
        ORCH_JWT_SECRET="j" * 40,
    )
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows["DATABASE_URL"] == ("postgresql://app:****@db.internal:5432/app", "environment")
    assert rows["ORCH_MODEL_FALLBACKS"] == ("gpt-4.1-mini,gpt-4o", "environment")
    assert rows["ORCH_MAX_TURNS"] == ("3", "environment")
    assert rows["ORCH_MAX_PARALLEL_STEPS"] == ("4", "default")
    assert rows["TEMPORAL_ADDRESS"] == ("unset", "default")
    assert rows["OPENAI_API_KEY"] == ("****", "environment")
    assert rows["ORCH_JWT_SECRET"] == ("****", "environment")
    # No placeholder any more: unset, and an operator can see it.
    assert rows["ORCH_WEBHOOK_SECRET"] == ("unset", "default")
    assert "hunter2" not in result.stdout and "sk-very-secret" not in result.stdout
    assert "j" * 40 not in result.stdout


def test_config_refuses_settings_that_would_not_start() -> None:
    result = _config(ORCH_ENVIRONMENT="production", ORCH_MAX_TURNS="many")
    assert result.returncode == 1
    assert "ORCH_MAX_TURNS" in result.stderr and "Traceback" not in result.stderr
    result = _config(ORCH_ENVIRONMENT="production")
    assert result.returncode == 1
    assert "ORCH_WEBHOOK_SECRET is not set" in " ".join(result.stderr.split())


def test_config_reference_is_the_committed_configuration_doc() -> None:
    result = _config("--reference", ORCH_MAX_TURNS="3")  # the environment must not leak into it
    assert result.returncode == 0, result.stderr
    assert result.stdout == reference_markdown() == (Path(REPO) / "docs" / "configuration.md").read_text()
    lines = result.stdout.splitlines()
    assert "| `DATABASE_URL` | string | unset |" in "\n".join(lines)
    assert "ORCH_DATABASE_URL" not in result.stdout
    assert "| `LOG_LEVEL`, `ORCH_LOG_LEVEL` |" in result.stdout
    assert "| `ORCH_MAX_TURNS` | integer | `6` |" in result.stdout
