"""The wheel installs the product only: the package discovery configured in pyproject.toml
matches the product's packages and none of the tooling (fake_openai, benchmarks, tests).
Checked on the configuration (what setuptools evaluates to pick packages) instead of building a
wheel, which takes longer than the whole rest of this file; `pip wheel --no-deps .` agrees."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages, find_packages

REPO = Path(__file__).resolve().parents[1]
PRODUCT = {"durable_orchestrator", "api", "activities", "workflows", "planner", "memory"}
TOOLING = {"fake_openai", "benchmarks", "tests"}


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_wheel_packages_are_the_product_only() -> None:
    find = _setuptools()["packages"]["find"]
    # pyproject.toml's `packages.find` discovers namespace packages unless told otherwise.
    finder = find_namespace_packages if find.get("namespaces", True) else find_packages
    packages = finder(
        where=str(REPO / find.get("where", ["."])[0]),
        include=find.get("include", ["*"]),
        exclude=find.get("exclude", []),
    )
    tops = {p.split(".")[0] for p in packages}
    assert tops == PRODUCT, packages
    assert "durable_orchestrator.devstack" in packages and "api.routes" in packages
    # The tooling exists as packages, so excluding it above is the configuration's doing.
    assert TOOLING <= set(find_packages(where=str(REPO)))


def test_top_level_modules_are_the_product_only() -> None:
    assert _setuptools().get("py-modules", []) == ["worker"]
