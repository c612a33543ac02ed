"""Cancel and deadline during planning end the same way on every Python `requires-python`
admits: the workflow's asyncio behaviour differs between versions (from 3.12 on,
`asyncio.wait_for` awaits in the caller's task), so each version runs TaskWorkflow for real.

Each interpreter gets a small venv with only temporalio (the version of this environment),
built once and kept under ~/.cache/orch-test-venvs (ORCH_TEST_VENV_CACHE); the probe
(tests/workflows/cancel_probe.py) runs the workflow against the session's Temporal dev server
with stand-in activities registered under the real names."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from durable_orchestrator.devstack import TemporalDevServer

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("cancel_probe.py")
VERSIONS = ["3.11", "3.12", "3.13"]  # every minor of requires-python = ">=3.11,<3.14"


def test_versions_cover_requires_python() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.14"' in text, "update VERSIONS with requires-python"


def _interpreter(minor: str) -> str:
    """This interpreter when it is the version asked for, else a system one."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == minor:
        return sys.executable
    candidates = [
        shutil.which(f"python{minor}"),
        *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{minor}.*/bin/python{minor}"))),
    ]
    for path in filter(None, candidates):
        probe = subprocess.run(
            [path, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(map(int, minor.split(".")))):
            return path
    raise AssertionError(
        f"no working python{minor} found (PATH, ~/.pyenv/versions); "
        f"requires-python admits it, so it must be tested"
    )


def _venv_python(minor: str) -> str:
    python = _interpreter(minor)
    if python == sys.executable:
        return python
    temporalio = version("temporalio")
    cache = Path(os.environ.get("ORCH_TEST_VENV_CACHE", "~/.cache/orch-test-venvs")).expanduser()
    venv = cache / f"py{minor}-temporalio-{temporalio}"
    ready = venv / ".ready"
    if not ready.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                f"temporalio=={temporalio}",
            ],
            check=True,
            timeout=300,
        )
        ready.write_text(temporalio)
    return str(venv / "bin" / "python")


@pytest.mark.parametrize("minor", VERSIONS)
def test_cancel_and_deadline_end_the_task_as_they_should(
    minor: str, temporal_server: TemporalDevServer
) -> None:
    python = _venv_python(minor)
    run = subprocess.run(
        [python, str(PROBE), temporal_server.address],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["python"].startswith(f"{minor}."), report

    for case in ("cancel", "cancel_step"):  # during planning, during a step's activity
        cancel = report[case]
        assert cancel["recorded"] == "cancelled", report  # what finish_task wrote to Postgres
        assert cancel["error"] == "cancelled by request"
        assert cancel["workflow"] == "cancelled"  # and the run closed as cancelled in Temporal
        assert cancel["activity_cancelled"] is True  # the running activity heard of it

    deadline = report["deadline"]
    assert deadline["recorded"] == "failed", report
    assert deadline["error"] == "deadline exceeded: the task did not finish within 1s"
    assert deadline["workflow"].startswith("failed: TaskFailed: deadline exceeded")
