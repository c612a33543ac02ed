"""The tiers are read from fixtures, and the skip allow-list names tests that exist."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import tier_of
from tests.skips import ALLOWED_SKIPS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "fixtures, tier",
    [
        (["tmp_path"], "fast"),
        (["time_skipping_env"], "fast"),
        (["fake_llm", "fake_llm_server"], "fast"),
        (["stack", "base_settings", "pg_url", "temporal_server"], "services"),
        (["engine", "pg_url"], "services"),
        (["redis_url"], "services"),
        (["subprocesses", "pg_url"], "system"),
    ],
)
def test_tier_follows_the_fixtures(fixtures: list[str], tier: str) -> None:
    assert tier_of(fixtures) == tier


@pytest.mark.parametrize("nodeid", sorted(ALLOWED_SKIPS))
def test_every_allowed_skip_is_a_real_test_with_a_reason(nodeid: str) -> None:
    path, _, name = nodeid.partition("::")
    tree = ast.parse((ROOT / path).read_text())
    functions = {
        n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    assert name.split("[")[0] in functions, (
        f"{nodeid} is not a test any more: drop it from tests/skips.py"
    )
    assert len(ALLOWED_SKIPS[nodeid]) > 20, "say why it may skip"
