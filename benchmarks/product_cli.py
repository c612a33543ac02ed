"""The product's `orchestrator` command, run as a subprocess: how a benchmark migrates a database
and makes API keys, as an operator would. It runs under this interpreter with the checkout on
PYTHONPATH, so the code under test is what answers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from benchmarks.procs import REPO_ROOT, child_env

#: `orchestrator` (the console script runs this same module).
ORCHESTRATOR = (sys.executable, "-m", "durable_orchestrator.cli")


def orchestrator(args: Sequence[str], *, database_url: str, timeout: float = 120) -> str:
    """Run `orchestrator ARGS` against `database_url`; its stdout, or RuntimeError with its output."""
    proc = subprocess.run(
        [*ORCHESTRATOR, *args],
        env=child_env({"DATABASE_URL": database_url, "COLUMNS": "200"}),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"`orchestrator {' '.join(args)}` exited {proc.returncode}: "
            f"{(proc.stdout + proc.stderr)[-2000:]}"
        )
    return proc.stdout


def migrate(database_url: str) -> None:
    orchestrator(["migrate"], database_url=database_url)


def create_key(database_url: str, user: str, name: str = "benchmarks") -> str:
    """A new API key for `user` (`keys create` prints the key as its last line)."""
    out = orchestrator(["keys", "create", "--user", user, "--name", name], database_url=database_url)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError("`orchestrator keys create` printed no key")
    return lines[-1]
