"""README and docs stay true: the configuration reference is the one Settings generates, the
API catalogue lists every route, and the two commands are the CI's."""

from __future__ import annotations

import re
from pathlib import Path

from api.app import create_app
from durable_orchestrator.cli.config import REGENERATE, reference_markdown
from durable_orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_generated_from_settings() -> None:
    reference = reference_markdown()
    rows = [line for line in reference.splitlines() if line.startswith("| `")]
    assert len(rows) == len(Settings.model_fields)  # one row per setting, none skipped
    assert (ROOT / "docs" / "configuration.md").read_text() == reference, (
        f"docs/configuration.md is out of date with durable_orchestrator/settings.py; regenerate it: {REGENERATE}"
    )


def test_every_setting_has_a_description() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert not missing, f"give these Settings fields a description=: {missing}"


def test_api_catalogue_lists_every_route() -> None:
    catalogue = (ROOT / "docs" / "api.md").read_text()
    routes = [  # as the app's OpenAPI schema publishes them
        f"{method.upper()} {path}"
        for path, operations in create_app(Settings()).openapi()["paths"].items()
        for method in operations
    ]
    assert len(routes) >= 14
    missing = [r for r in routes if f"`{r}" not in catalogue]
    assert not missing, f"add these routes to the table in docs/api.md: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.DOTALL)
    test_cmd = next(b for b in blocks if "pytest" in b)
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
    assert blocks[0].endswith("orchestrator up")
