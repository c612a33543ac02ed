"""The worker writes the bytecode of the modules the workflow sandbox imports for every run,
also where PYTHONDONTWRITEBYTECODE stops Python writing it on import."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from durable_orchestrator.temporal.bytecode import ensure_bytecode


def test_bytecode_is_written_although_imports_do_not_write_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "probe_workflows"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "flow.py").write_text("ANSWER = 42\n")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    pkg = importlib.import_module("probe_workflows")
    pyc = Path(importlib.util.cache_from_source(str(package / "flow.py")))
    importlib.import_module("probe_workflows.flow")
    assert not pyc.exists()  # what PYTHONDONTWRITEBYTECODE does on import

    assert ensure_bytecode(pkg)
    assert pyc.exists()
    # An edited module gets new bytecode on the next start.
    before = pyc.read_bytes()
    (package / "flow.py").write_text("ANSWER = 43  # edited\n")
    os.utime(package / "flow.py", (1, 1))  # compileall compares times to the second only
    assert ensure_bytecode(pkg)
    assert pyc.read_bytes() != before
    for name in ("probe_workflows.flow", "probe_workflows"):
        sys.modules.pop(name, None)


def test_every_workflow_module_gets_its_bytecode() -> None:
    import workflows

    assert ensure_bytecode(workflows)
    for module in Path(workflows.__path__[0]).glob("*.py"):
        assert Path(importlib.util.cache_from_source(str(module))).exists(), module
