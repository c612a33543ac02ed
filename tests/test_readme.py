"""README stays true: every setting is documented, and the two commands are the CI's."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices

from durable_orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def env_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.append(alias.choices[0] if isinstance(alias, AliasChoices) else f"ORCH_{name.upper()}")
    return names


def test_every_setting_is_in_the_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1]
    missing = [n for n in env_names() if f"| `{n}` |" not in table]
    assert not missing, f"document these in README's configuration table: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.DOTALL)
    test_cmd = next(b for b in blocks if "pytest" in b)
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
    assert blocks[0].endswith("orchestrator up")
