"""The benchmarks reach the product only through its public entry points (the `orchestrator`
CLI, HTTP, `python -m worker`, `uvicorn api.main:app`) and the public surface of
`durable_orchestrator.devstack`: no module under benchmarks/ imports anything else of it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from durable_orchestrator import devstack

REPO_ROOT = Path(__file__).resolve().parents[2]
PRODUCT = {"durable_orchestrator", "api", "activities", "workflows", "planner", "memory", "worker"}
PUBLIC = "durable_orchestrator.devstack"


def product_imports(source: str) -> list[str]:
    """Each import of the product in `source` that is not the devstack's public surface,
    including `importlib.import_module("...")` with a literal name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PRODUCT and alias.name != PUBLIC:
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            module, names = node.module, [a.name for a in node.names]
            if module.split(".")[0] not in PRODUCT:
                continue
            allowed = (module == PUBLIC and set(names) <= set(devstack.__all__)) or (
                module == "durable_orchestrator" and names == ["devstack"]
            )
            if not allowed:
                found.append(f"line {node.lineno}: from {module} import {', '.join(names)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and node.args[0].value.split(".")[0] in PRODUCT
            and node.args[0].value != PUBLIC
        ):
            found.append(f"line {node.lineno}: import_module({node.args[0].value!r})")
    return found


MODULES = sorted((REPO_ROOT / "benchmarks").rglob("*.py"))


def test_benchmarks_are_found() -> None:
    names = {p.relative_to(REPO_ROOT).as_posix() for p in MODULES}
    assert {"benchmarks/env.py", "benchmarks/memory_bench.py", "benchmarks/suites.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_benchmark_imports_only_public_entry_points(path: Path) -> None:
    assert product_imports(path.read_text()) == []


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("from durable_orchestrator.devstack import EmbeddedPostgres, free_port", True),
        ("from durable_orchestrator import devstack", True),
        ("import durable_orchestrator.devstack", True),
        ("import fake_openai\nfrom benchmarks.env import BenchEnv", True),
        ("from durable_orchestrator.devstack.processes import stop_process", False),
        ("from durable_orchestrator.data.engine import create_engine", False),
        ("def f():\n    from api.routes import memory", False),
        ("import memory.service", False),
        ("import worker", False),
        ("import importlib\nimportlib.import_module('planner.models')", False),
    ],
)
def test_the_check_tells_public_from_internal(source: str, allowed: bool) -> None:
    assert (product_imports(source) == []) is allowed
