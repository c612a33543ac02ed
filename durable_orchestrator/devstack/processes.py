"""Child processes we start (`orchestrator up`, benchmarks): stopped by pid, waited on over HTTP."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM the process, then SIGKILL after `timeout` seconds. No-op if it has exited."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until `url` answers 200. RuntimeError if `proc` exits first, TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited (code {proc.returncode}) before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:g}s")
