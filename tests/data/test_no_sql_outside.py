"""No SQL outside the data layer: product code outside durable_orchestrator/data/ never writes a
SQL string (SQLAlchemy's `text()`, or `exec_driver_sql`); it calls a query module instead.

Read with `ast`, not grep: `sa.text(...)`, `sqlalchemy.text(...)`, `from sqlalchemy import text`
(under any alias) are found however they are spelled, and `path.read_text()` is not."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("durable_orchestrator", "api", "activities", "workflows", "planner", "memory", "worker.py")
DATA_LAYER = ROOT / "durable_orchestrator" / "data"
# Modules allowed to write SQL outside the data layer, as paths from the repository root.
ALLOWED: frozenset[str] = frozenset()

_SQL_PACKAGES = ("sqlalchemy", "sqlmodel")


def _product_modules() -> list[Path]:
    paths: list[Path] = []
    for name in PRODUCT:
        path = ROOT / name
        paths += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [p for p in paths if DATA_LAYER not in p.parents]


def _dotted(node: ast.expr) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"]; None for anything that is not a plain name chain."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _imported_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> what it was imported as (`sa` -> `sqlalchemy`, `t` -> `sqlalchemy.text`)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:  # `import sqlalchemy.sql` binds `sqlalchemy`
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def sql_calls(source: str) -> list[tuple[int, str]]:
    """(line, call) of every textual SQL statement built or run in `source`."""
    tree = ast.parse(source)
    imported = _imported_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts = _dotted(node.func)
        if parts is None:
            continue
        if parts[-1] == "exec_driver_sql":
            found.append((node.lineno, ".".join(parts)))
            continue
        resolved = ".".join([imported.get(parts[0], parts[0]), *parts[1:]])
        if resolved.split(".")[0] in _SQL_PACKAGES and resolved.split(".")[-1] == "text":
            found.append((node.lineno, ".".join(parts)))
    return sorted(found)


def test_the_detector_sees_every_spelling() -> None:
    source = (
        "import sqlalchemy\nimport sqlalchemy as sa\nfrom sqlalchemy import text\n"
        "from sqlalchemy import text as t\nfrom sqlalchemy import sql\nfrom pathlib import Path\n"
        "sqlalchemy.text('a')\nsa.text('b')\ntext('c')\nt('d')\nsql.text('e')\n"
        "conn.exec_driver_sql('f')\nPath('x').read_text()\nresponse.text()\n"
    )
    assert [line for line, _ in sql_calls(source)] == [7, 8, 9, 10, 11, 12]


def test_no_sql_outside_the_data_layer() -> None:
    modules = _product_modules()
    assert len(modules) > 50, "the product's modules were not found"
    offenders = {}
    for path in modules:
        rel = str(path.relative_to(ROOT))
        calls = sql_calls(path.read_text())
        if calls and rel not in ALLOWED:
            offenders[rel] = [f"line {line}: {call}(...)" for line, call in calls]
    assert not offenders, (
        "SQL outside durable_orchestrator/data/ (move it into a query module there):\n"
        + "\n".join(f"  {path}: {', '.join(calls)}" for path, calls in sorted(offenders.items()))
    )
