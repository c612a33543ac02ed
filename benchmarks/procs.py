"""Child processes of a benchmark run: started in their own session, stopped by pid, always.

Every server a benchmark measures against (fake LLM, worker, API, baselines) runs in its own
process so its CPU is not charged to the process that measures. `Procs` keeps the list and
stops everything in reverse order on exit, on an exception and on Ctrl-C."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from durable_orchestrator.devstack import stop_process as stop_pid
from durable_orchestrator.devstack import wait_http

__all__ = ["Procs", "child_env", "read_ready_line", "stop_pid", "wait_http"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "LOG_LEVEL": os.environ.get("BENCH_CHILD_LOG_LEVEL", "WARNING"),
    }
    env.update(extra or {})
    return env


class Procs:
    """The processes one run started; `stop_all()` ends them (SIGTERM, then SIGKILL)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes] | None]] = []

    def spawn(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else child_env(),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            start_new_session=True,
        )
        self._procs.append((name, proc, log))
        return proc

    def python(self, name: str, module_args: Sequence[str], env: Mapping[str, str] | None = None,
               *, stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
        return self.spawn(name, [sys.executable, *module_args], env, stdout_pipe=stdout_pipe)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        stop_pid(proc, timeout)
        for i, (_, p, log) in enumerate(self._procs):
            if p is proc:
                if log is not None:
                    log.close()
                del self._procs[i]
                break

    def stop_all(self) -> None:
        while self._procs:
            self.stop(self._procs[-1][1])

    def log_tail(self, name: str, limit: int = 3000) -> str:
        try:
            return (self.log_dir / f"{name}.log").read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def read_ready_line(proc: subprocess.Popen[bytes], prefix: str, timeout: float) -> str:
    """Read the child's stdout until a line starting with `prefix`; return the rest of it."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
        elif proc.poll() is not None:
            raise RuntimeError(f"process exited (code {proc.returncode}) before printing {prefix!r}")
        time.sleep(0.02)
    raise TimeoutError(f"no {prefix!r} line within {timeout:g}s")
