"""Where the time goes: `python -m benchmarks.profile [--tasks N] [--latency S] [--no-py-spy]
[--set NAME=VALUE ...]`.

Runs one batch of N concurrent 3-step tasks through the product (same set-up as the
throughput suite; `--set` gives the product extra settings, e.g.
`ORCH_MEMORY_REMEMBER_RESULTS=false` to see what a feature costs) and reports
* the CPU seconds each process spent during the batch (worker, API, Temporal dev server,
  PostgreSQL, fake LLM) and per task;
* with py-spy (needs ptrace), the worker's samples grouped by library and its top functions
  (self time); the raw collapsed stacks are kept next to the report.
Writes benchmarks/results/profile.json."""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.env import BenchEnv
from benchmarks.report import RESULTS_DIR, machine_info, write_result
from benchmarks.runner import _sigterm
from benchmarks.suites import _product_batch, _raw_batch

# First matching pattern in a frame's file path names the library it belongs to.
CATEGORIES: list[tuple[str, str]] = [
    (r"temporalio/worker/workflow_sandbox", "temporal workflow sandbox"),
    (r"temporalio/worker/_workflow_instance", "temporal workflow instance"),
    (r"temporalio/(worker|bridge)", "temporal worker / core bridge"),
    (r"temporalio/", "temporal (other: converters, client)"),
    (r"google/protobuf", "protobuf"),
    (r"sqlalchemy/", "SQLAlchemy"),
    (r"asyncpg/", "asyncpg"),
    (r"openai/", "openai SDK"),
    (r"(httpx|httpcore|h11|anyio)/", "httpx / httpcore"),
    (r"pydantic", "pydantic"),
    (r"structlog/|logging/", "logging"),
    (r"/(activities|workflows|core|planner|worker)[/.]", "our code"),
    (r"asyncio/", "asyncio event loop"),
]


def _categorise(path: str) -> str:
    for pattern, name in CATEGORIES:
        if re.search(pattern, path):
            return name
    return "other"


def summarise_collapsed(text: str, top: int = 25) -> dict[str, Any]:
    """Group py-spy raw (collapsed) samples: inclusive share per library (a sample counts once for
    each library on its stack, innermost first wins for 'self'), top self functions."""
    total = 0
    self_by_func: collections.Counter[str] = collections.Counter()
    self_by_cat: collections.Counter[str] = collections.Counter()
    incl_by_cat: collections.Counter[str] = collections.Counter()
    idle = 0
    for line in text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        # Idle: the event loop waiting in select/epoll (py-spy --idle includes these).
        if re.search(r"\b(select|poll|epoll|_run_once)\b.*selectors|select \(selectors", leaf):
            idle += count
        self_by_func[leaf] += count
        self_by_cat[_categorise(leaf)] += count
        for cat in {_categorise(f) for f in frames}:
            incl_by_cat[cat] += count

    def pct(c: int) -> float:
        return round(100 * c / total, 1) if total else 0.0

    return {
        "samples": total,
        "idle_pct": pct(idle),
        "self_pct_by_library": {k: pct(v) for k, v in self_by_cat.most_common()},
        "inclusive_pct_by_library": {k: pct(v) for k, v in incl_by_cat.most_common()},
        "top_self_functions": [(k, pct(v)) for k, v in self_by_func.most_common(top)],
    }


def _cpu(pids: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """CPU seconds so far, per group and pid."""
    out: dict[str, dict[int, float]] = {}
    for name, plist in pids.items():
        out[name] = {}
        for pid in plist:
            try:
                t = psutil.Process(pid).cpu_times()
                out[name][pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return out


def _delta(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    # A pid that appeared during the batch (a new PostgreSQL backend) started from zero.
    return {name: round(sum(v - before[name].get(pid, 0.0) for pid, v in after[name].items()), 2)
            for name in after}


def _postgres_pids(pgdata: Path) -> list[int]:
    """The postmaster serving `pgdata` and its children (backends, walwriter, ...)."""
    try:
        master = int((pgdata / "postmaster.pid").read_text().split()[0])
        proc = psutil.Process(master)
        return [master, *(c.pid for c in proc.children(recursive=True))]
    except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
        return []


def shapes(reps: int = 3, seq_n: int = 20, conc_n: int = 100, conc: int = 50) -> dict[str, Any]:
    """Cost of workflow shapes on the raw SDK (fake LLM latency 0): 3 activities (the baseline),
    plan + 3 + finish as 5 activities (the product's shape), finish as a local activity."""
    from temporalio.client import Client

    from benchmarks.baselines.raw_workflow import RAW_FIVE, RAW_LOCAL_FINISH, RAW_WORKFLOW
    from benchmarks.report import summary_ms
    from benchmarks.suites import _bounded_gather, _raw_task

    workdir = Path(tempfile.mkdtemp(prefix="orch-shapes-"))
    env = BenchEnv(workdir, quick=False)
    names = {RAW_WORKFLOW: "3 activities", RAW_FIVE: "plan + 3 + finish (5 activities)",
             RAW_LOCAL_FINISH: "plan + 3 + local-activity finish"}
    runs: dict[str, dict[str, list[float]]] = {n: {"seq_p50": [], "conc_tps": []} for n in names}
    try:
        env.start()
        with env.raw_worker(env.fake(0.0)) as (tq, _):
            async def rep() -> None:
                client = await Client.connect(env.temporal_address)
                for wf in names:
                    lats, _w = await _bounded_gather(seq_n, 1, lambda _i, wf=wf: _raw_task(client, tq, wf), 300)
                    runs[wf]["seq_p50"].append(float(summary_ms(lats)["p50"]))
                    lats, wall = await _bounded_gather(conc_n, conc, lambda _i, wf=wf: _raw_task(client, tq, wf), 300)
                    runs[wf]["conc_tps"].append(len(lats) / wall)

            for _ in range(reps):
                asyncio.run(rep())
    finally:
        env.close()
        shutil.rmtree(workdir, ignore_errors=True)

    def med(xs: list[float]) -> float:
        return round(sorted(xs)[(len(xs) - 1) // 2], 2)

    out = {names[wf]: {"sequential_p50_ms": med(r["seq_p50"]), f"tasks_per_s_at_{conc}": med(r["conc_tps"]),
                       "all": r} for wf, r in runs.items()}
    return {"parameters": {"reps": reps, "sequential": seq_n, "concurrent": conc_n, "concurrency": conc,
                           "llm_latency_s": 0}, "results": out, "machine": machine_info()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--no-py-spy", action="store_true")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--shapes", action="store_true", help="only the workflow-shape experiment")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the product's processes (repeatable)")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.set)
    if args.shapes:
        signal.signal(signal.SIGTERM, _sigterm)
        import json

        res = shapes()
        write_result("shapes", res)
        print(json.dumps(res["results"], indent=2))
        return 0
    signal.signal(signal.SIGTERM, _sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="orch-profile-"))
    env = BenchEnv(workdir, quick=False)
    result: dict[str, Any] = {"parameters": vars(args), "machine": machine_info()}
    try:
        env.start()
        fake = env.fake(args.latency)
        with env.product(fake, settings=settings) as prod:
            pids = {
                "worker": [prod.worker_pid or 0],
                "api": [prod.api_pid],
                "temporal dev server": [env.temporal_pid or 0],
                "postgres (all backends)": _postgres_pids(workdir / "pg"),
                "fake LLM": [p.pid for p in psutil.Process().children() if "fake_openai" in " ".join(p.cmdline())],
            }
            spy = None
            raw = RESULTS_DIR / "profile-worker.collapsed.txt"
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            if not args.no_py_spy and Path(py_spy).exists():
                spy = subprocess.Popen(
                    [py_spy, "record", "--pid", str(prod.worker_pid), "--rate", str(args.rate),
                     "--format", "raw", "--output", str(raw), "--duration", "600", "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                )
                time.sleep(1.0)
            before = _cpu(pids)
            t0 = time.perf_counter()
            secs = asyncio.run(_product_batch(env, prod, args.tasks, 600))
            pids["postgres (all backends)"] = _postgres_pids(workdir / "pg")
            after = _cpu(pids)
            wall = time.perf_counter() - t0
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
                try:
                    _, err = spy.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    err = b""
                if raw.exists():
                    result["py_spy_worker"] = summarise_collapsed(raw.read_text())
                else:
                    result["py_spy_worker"] = {"error": (err or b"").decode(errors="replace")[-500:]}
        cpu = _delta(before, after)
        # The raw SDK baseline, same batch, same servers: its worker's CPU per task.
        with env.raw_worker(fake) as (raw_tq, raw_pid):
            rpids = {"raw SDK worker": [raw_pid], "temporal dev server": [env.temporal_pid or 0]}
            asyncio.run(_raw_batch(env, raw_tq, min(20, args.tasks), 600))  # warm-up
            rb = _cpu(rpids)
            raw_secs = asyncio.run(_raw_batch(env, raw_tq, args.tasks, 600))
            rcpu = _delta(rb, _cpu(rpids))
        result["raw_sdk_batch"] = {"secs": round(raw_secs, 2), "tasks_per_s": round(args.tasks / raw_secs, 2),
                                   "cpu_seconds": rcpu,
                                   "cpu_ms_per_task": {k: round(1000 * v / args.tasks, 1) for k, v in rcpu.items()}}
        result["batch"] = {"tasks": args.tasks, "secs": round(secs, 2),
                           "tasks_per_s": round(args.tasks / secs, 2), "wall_s": round(wall, 2)}
        result["cpu_seconds"] = cpu
        result["cpu_ms_per_task"] = {k: round(1000 * v / args.tasks, 1) for k, v in cpu.items()}
        result["cpu_share_pct"] = {k: round(100 * v / max(1e-9, sum(cpu.values())), 1) for k, v in cpu.items()}
    finally:
        env.close()
        shutil.rmtree(workdir, ignore_errors=True)
    path = write_result("profile", result)
    import json

    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    print(f"written {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
