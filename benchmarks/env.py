"""Everything a benchmark run needs, started by the run itself and stopped at its end.

One embedded PostgreSQL and one Temporal dev server (free ports, temp dir) are shared by every
suite; fake LLMs (one subprocess per latency), the product (worker + API subprocesses, mirroring
`orchestrator up`) and the baselines are started per suite on their own task queues."""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psutil

from benchmarks import baselines, product_cli
from benchmarks.baselines.handwritten_api import add_key
from benchmarks.db import libpq_url, wait_for_memory_of
from benchmarks.procs import Procs, child_env, read_ready_line, wait_http
from durable_orchestrator.devstack import EmbeddedPostgres, TemporalDevServer, free_port


@dataclass
class Product:
    api_url: str
    key: str
    task_queue: str
    worker_pid: int | None
    api_pid: int

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


class BenchEnv:
    def __init__(self, workdir: Path, quick: bool) -> None:
        self.workdir = workdir
        self.quick = quick
        self.procs = Procs(workdir / "logs")
        self._pg: EmbeddedPostgres | None = None
        self._temporal: TemporalDevServer | None = None
        self.db_url = ""
        self.temporal_address = ""
        self.key = ""
        self._fakes: dict[tuple[float, tuple[str, ...]], str] = {}
        self.fake_pids: dict[str, int] = {}
        self.temporal_pid: int | None = None
        self.pg_pid: int | None = None

    # --- shared services ---------------------------------------------------------------------

    def start(self) -> None:
        # The product's worker writes its workflow modules' bytecode itself (the sandbox imports
        # them for every run; PYTHONDONTWRITEBYTECODE may stop Python writing it): the
        # baselines' workflows get theirs here, so neither side compiles them on every run.
        compileall.compile_dir(baselines.__path__[0], quiet=2)
        self._pg = EmbeddedPostgres(self.workdir / "pg")
        self.db_url = self._pg.start()
        self.pg_pid = self._pg.pid
        product_cli.migrate(self.db_url)
        self._temporal = TemporalDevServer(
            self.workdir / "temporal.db", ui=False, log_file=self.workdir / "logs" / "temporal.log"
        )
        self.temporal_address = self._temporal.start()
        self.temporal_pid = self._temporal.pid
        self.key = product_cli.create_key(self.db_url, "bench")

    def close(self) -> None:
        self.procs.stop_all()
        if self._temporal is not None:
            self._temporal.stop()
        if self._pg is not None:
            self._pg.stop()

    def fake(self, latency: float, *args: str) -> str:
        """Base URL of a fake LLM subprocess answering after `latency` seconds, with extra
        `python -m fake_openai` arguments (one subprocess per distinct setting)."""
        key = (latency, args)
        if key not in self._fakes:
            proc = self.procs.python(
                f"fake-{latency:g}" + ("-" + "".join(a.strip("-")[:3] for a in args) if args else ""),
                ["-m", "fake_openai", "--port", "0", "--latency", str(latency), *args],
                stdout_pipe=True,
            )
            self._fakes[key] = read_ready_line(proc, "READY", 30)
            self.fake_pids[self._fakes[key]] = proc.pid
        return self._fakes[key]

    # --- the product -------------------------------------------------------------------------

    def _product_env(self, llm_url: str, task_queue: str) -> dict[str, str]:
        return child_env({
            "DATABASE_URL": self.db_url,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "OPENAI_BASE_URL": llm_url,
            "OPENAI_API_KEY": "bench",
            "ORCH_MODEL": "fake-model",
            "ORCH_TASK_QUEUE": task_queue,
            # Benchmarks measure the API, not the per-key limiter.
            "RATE_LIMIT": "1000000/minute",
        })

    @contextlib.contextmanager
    def product(
        self, llm_url: str, *, worker: bool = True, settings: dict[str, str] | None = None
    ) -> Iterator[Product]:
        """Worker + API subprocesses on a fresh task queue (with extra environment `settings`);
        warmed up by finished tasks, then given time to finish loading (see `settle`)."""
        tq = f"bench-{uuid.uuid4().hex[:8]}"
        env = {**self._product_env(llm_url, tq), **(settings or {})}
        started = []
        try:
            wproc = None
            if worker:
                wproc = self.procs.python("worker", ["-m", "worker"], env)
                started.append(wproc)
            url, aproc = self.start_api(env)
            started.append(aproc)
            prod = Product(url, self.key, tq, wproc.pid if wproc else None, aproc.pid)
            if worker:
                for _ in range(1 if self.quick else 3):
                    task_id = asyncio.run(warm_up(prod))
                if env.get("ORCH_MEMORY_REMEMBER_RESULTS", "true").lower() not in ("0", "false", "no"):
                    # The worker loads its embedding model in the background (~10 s of CPU):
                    # measuring before it is loaded would count the load as the tasks' cost.
                    # A warm-up task's result reaching memory means the model is loaded.
                    asyncio.run(wait_for_memory_of(self.db_url, task_id, 120))
                assert wproc is not None
                settle(wproc.pid)
            yield prod
        finally:
            for proc in reversed(started):
                self.procs.stop(proc, 35)

    def start_api(self, env: dict[str, str], name: str = "api") -> tuple[str, subprocess.Popen[bytes]]:
        """`uvicorn api.main:app` on a free port, as `up` runs it; (base URL, process) once it
        answers /healthz. The caller stops the process (`self.procs.stop`)."""
        port = free_port()
        proc = self.procs.python(
            name,
            ["-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
             "--no-access-log", "--log-level", "warning"],
            env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/healthz", proc, 60)
        except BaseException:
            self.procs.stop(proc, 15)
            raise
        return url, proc

    # --- the raw Temporal SDK baseline -------------------------------------------------------

    @contextlib.contextmanager
    def raw_worker(self, llm_url: str) -> Iterator[tuple[str, int]]:
        """(task queue, pid) of a raw-SDK worker subprocess."""
        tq = f"raw-{uuid.uuid4().hex[:8]}"
        proc = self.procs.python(
            "raw-worker",
            ["-m", "benchmarks.baselines.raw_worker", "--address", self.temporal_address,
             "--task-queue", tq, "--llm-url", llm_url],
            child_env(),
            stdout_pipe=True,
        )
        try:
            read_ready_line(proc, "READY", 60)
            yield tq, proc.pid
        finally:
            self.procs.stop(proc, 35)

    # --- the hand-written baseline ----------------------------------------------------------

    @contextlib.contextmanager
    def handwritten_worker(self, llm_url: str) -> Iterator[tuple[str, int]]:
        """(task queue, pid) of the hand-written baseline's worker subprocess."""
        tq = f"hw-{uuid.uuid4().hex[:8]}"
        proc = self.procs.python(
            "handwritten-worker",
            ["-m", "benchmarks.baselines.handwritten_worker", "--address", self.temporal_address,
             "--task-queue", tq, "--llm-url", llm_url, "--db-url", self.db_url],
            child_env(),
            stdout_pipe=True,
        )
        try:
            read_ready_line(proc, "READY", 60)
            yield tq, proc.pid
        finally:
            self.procs.stop(proc, 35)

    @contextlib.contextmanager
    def handwritten_api(self) -> Iterator[Product]:
        """The hand-written baseline's API (benchmarks/baselines/handwritten_api.py) under
        uvicorn like the product's, with this run's key; its workflows start on a queue
        nobody serves."""
        asyncio.run(self._add_handwritten_key())
        port = free_port()
        env = child_env({"HW_DB_URL": self.db_url, "HW_TEMPORAL_ADDRESS": self.temporal_address,
                         "HW_TASK_QUEUE": f"hwa-{uuid.uuid4().hex[:8]}"})
        proc = self.procs.python(
            "handwritten-api",
            ["-m", "uvicorn", "benchmarks.baselines.handwritten_api:app", "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log", "--log-level", "warning"],
            env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/healthz", proc, 60)
            yield Product(url, self.key, "", None, proc.pid)
        finally:
            self.procs.stop(proc, 15)

    async def _add_handwritten_key(self) -> None:
        conn = await asyncpg.connect(libpq_url(self.db_url))
        try:
            await add_key(conn, self.key, "bench-handwritten")
        finally:
            await conn.close()

    def service_pids(self, llm_url: str) -> dict[str, int | None]:
        """Pids of the shared services one side's CPU is read from."""
        return {"temporal": self.temporal_pid, "postgres": self.pg_pid, "fake_llm": self.fake_pids.get(llm_url)}

    # --- the Celery baseline -----------------------------------------------------------------

    @contextlib.contextmanager
    def celery_worker(self, broker: str, llm_url: str, pool: str, concurrency: int) -> Iterator[str]:
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        env = child_env({"BENCH_CELERY_BROKER": broker, "BENCH_LLM_URL": llm_url,
                         "BENCH_CELERY_QUEUE": queue})
        proc = self.procs.spawn(
            f"celery-{pool}",
            [sys.executable, "-m", "celery", "-A", "benchmarks.baselines.celery_chain", "worker",
             "-P", pool, "-c", str(concurrency), "-Q", queue, "--loglevel", "WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{queue}@bench"],
            env,
        )
        try:
            yield queue
        finally:
            self.procs.stop(proc, 30)


def settle(pid: int, *, idle_pct: float = 10.0, limit_s: float = 90.0) -> None:
    """Wait until the process goes idle (whatever it still loads or writes after the warm-up
    tasks), so a measurement does not count it."""
    proc = psutil.Process(pid)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.cpu_percent(interval=0.5) > idle_pct:
        pass


async def warm_up(prod: Product, limit_s: float = 60) -> str:
    async with httpx.AsyncClient(base_url=prod.api_url, headers=prod.headers, timeout=30) as http:
        task_id = await submit(http)
        await wait_done(http, task_id, limit_s=limit_s, poll=0.05)
    return task_id


async def submit(http: httpx.AsyncClient, description: str = "Write a short report on tea") -> str:
    resp = await http.post("/tasks", json={"description": description})
    if resp.status_code != 202:
        raise RuntimeError(f"POST /tasks answered {resp.status_code}: {resp.text[:300]}")
    return str(resp.json()["id"])


async def wait_done(http: httpx.AsyncClient, task_id: str, *, limit_s: float, poll: float) -> str:
    deadline = time.monotonic() + limit_s
    while True:
        resp = await http.get(f"/tasks/{task_id}")
        if resp.status_code == 200:
            status = resp.json()["status"]
            if status == "completed":
                return status
            if status in ("failed", "cancelled"):
                raise RuntimeError(f"task {task_id} ended {status}: {resp.text[:500]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} not completed within {limit_s:g}s")
        await asyncio.sleep(poll)
