"""The suites. Each takes the run's BenchEnv (or None when it needs no shared services) and
returns (payload for results/<suite>.json, rows for the table).

Every load loop is bounded in count and in time and only targets 127.0.0.1."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
from temporalio.client import Client

from benchmarks.baselines.handwritten_workflow import HANDWRITTEN_WORKFLOW, PlanInput
from benchmarks.baselines.raw_workflow import RAW_WORKFLOW, STEPS
from benchmarks.cpu import CpuMeter, median_per_task
from benchmarks.db import DoneWatcher, wait_queue_drained
from benchmarks.env import BenchEnv, Product, submit, wait_done
from benchmarks.fair_share import fairness
from benchmarks.live_text import streaming
from benchmarks.procs import Procs, child_env, read_ready_line
from benchmarks.product_cli import ORCHESTRATOR
from benchmarks.report import median_run, ratio, summary_ms
from durable_orchestrator.devstack import free_port

Rows = list[tuple[str, str, str, str]]
Result = tuple[dict[str, Any], Rows]
PROMPT = "Write a short report on tea"


def _fmt(x: float | None, unit: str = "", digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


async def _bounded_gather(n: int, concurrency: int, fn: Callable[[int], Awaitable[float]],
                          limit_s: float) -> tuple[list[float], float]:
    """Run fn(0..n-1) with at most `concurrency` in flight; (latencies, wall seconds)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> float:
        async with sem:
            return await fn(i)

    t0 = time.perf_counter()
    lats = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), limit_s)
    return list(lats), time.perf_counter() - t0


# --- 1. overhead -----------------------------------------------------------------------------


async def _product_task(prod: Product, http: httpx.AsyncClient, poll: float, limit_s: float) -> float:
    """User-visible end to end: POST, then poll GET every `poll` seconds until completed."""
    t0 = time.perf_counter()
    task_id = await submit(http, PROMPT)
    await wait_done(http, task_id, limit_s=limit_s, poll=poll)
    return time.perf_counter() - t0


async def _product_task_watched(http: httpx.AsyncClient, watcher: DoneWatcher) -> float:
    t_submit = time.time()
    task_id = await submit(http, PROMPT)
    return await watcher.done_at(task_id) - t_submit


async def _raw_task(client: Client, tq: str, workflow: str = RAW_WORKFLOW) -> float:
    t0 = time.perf_counter()
    await client.execute_workflow(workflow, PROMPT, id=f"raw-{uuid.uuid4().hex}", task_queue=tq,
                                  execution_timeout=_td(120))
    return time.perf_counter() - t0


async def _handwritten_task(client: Client, tq: str) -> float:
    t0 = time.perf_counter()
    task_id = uuid.uuid4().hex
    await client.execute_workflow(HANDWRITTEN_WORKFLOW, PlanInput(task_id, PROMPT), id=f"hw-{task_id}",
                                  task_queue=tq, execution_timeout=_td(120))
    return time.perf_counter() - t0


SIDE_NAMES = {"product": "this product", "handwritten": "hand-written", "raw_sdk": "raw SDK (3 activities)"}


def _side_pids(env: BenchEnv, llm_url: str, prod: Product, raw_pid: int, hw_pid: int) -> dict[str, dict[str, int | None]]:
    """Per side, the pid of each process role whose CPU is charged to it: its own worker (and
    API for the product) and the shared Temporal, PostgreSQL and fake LLM."""
    shared = env.service_pids(llm_url)
    return {
        "product": {"worker": prod.worker_pid, "api": prod.api_pid, **shared},
        "handwritten": {"worker": hw_pid, "api": None, **shared},
        "raw_sdk": {"worker": raw_pid, "api": None, **shared},
    }


def _td(secs: float):  # type: ignore[no-untyped-def]
    from datetime import timedelta

    return timedelta(seconds=secs)


def overhead(env: BenchEnv, quick: bool) -> Result:
    params = {
        "steps": STEPS, "llm_latency_s": 0.0,
        "sequential_tasks": 3 if quick else 20,
        "concurrency": 10 if quick else 50,
        "concurrent_tasks": 10 if quick else 100,
        "poll_interval_s": 0.02,
        "completion_detection": "sequential: the client polls GET /tasks/{id} every poll_interval_s; "
                                "concurrent: tasks.updated_at of the terminal write, read from "
                                "Postgres every 50 ms (no HTTP polling load)",
        "repetitions": 1 if quick else 3,
        "note": "product: POST /tasks then poll GET /tasks/{id} until completed (plan call + 3 step "
                "calls + finish); hand-written: execute_workflow of a plan activity + one activity per "
                "step, each one chat completion and its row written with asyncpg; raw SDK: "
                "execute_workflow of 3 activities, each one chat completion",
        "cpu_per_task": "CPU seconds per task of each process role over the concurrent phase (psutil, "
                        "process + descendants + reaped children); temporal/postgres/fake_llm are "
                        "shared, so they include idle background work of the other sides",
    }
    fake = env.fake(0.0)
    timeout = 60 if quick else 300

    async def run_rep(prod: Product, raw_tq: str, hw_tq: str,
                      pids: dict[str, dict[str, int | None]]) -> dict[str, Any]:
        client = await Client.connect(env.temporal_address)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=prod.api_url, headers=prod.headers, timeout=30,
                                     limits=limits) as http:
            async def p(_: int) -> float:
                return await _product_task(prod, http, params["poll_interval_s"], timeout)

            async def r(_: int) -> float:
                return await _raw_task(client, raw_tq)

            async def h(_: int) -> float:
                return await _handwritten_task(client, hw_tq)

            out: dict[str, Any] = {"cpu_per_task": {}}
            for side, fn in (("product", p), ("handwritten", h), ("raw_sdk", r)):
                lats, _ = await _bounded_gather(params["sequential_tasks"], 1, fn, timeout)
                out[f"{side}_seq"] = summary_ms(lats)
            async with DoneWatcher(env.db_url) as watcher:
                async def pw(_: int) -> float:
                    return await _product_task_watched(http, watcher)

                for side, fn in (("product", pw), ("handwritten", h), ("raw_sdk", r)):
                    with CpuMeter(pids[side]) as meter:
                        lats, wall = await _bounded_gather(params["concurrent_tasks"], params["concurrency"],
                                                           fn, timeout)
                    out[f"{side}_conc"] = {**summary_ms(lats), "tasks_per_s": round(len(lats) / wall, 2)}
                    out["cpu_per_task"][side] = meter.per_task(len(lats))
        return out

    reps = []
    with (env.product(fake) as prod, env.raw_worker(fake) as (raw_tq, raw_pid),
          env.handwritten_worker(fake) as (hw_tq, hw_pid)):
        pids = _side_pids(env, fake, prod, raw_pid, hw_pid)
        for _ in range(params["repetitions"]):
            reps.append(asyncio.run(run_rep(prod, raw_tq, hw_tq, pids)))

    res: dict[str, Any] = {}
    for side in SIDE_NAMES:
        res[f"{side}_seq"] = median_run([r[f"{side}_seq"] for r in reps], "p50")
        res[f"{side}_conc"] = median_run([r[f"{side}_conc"] for r in reps], "tasks_per_s")
    cpu = {side: median_per_task([r["cpu_per_task"][side] for r in reps]) for side in SIDE_NAMES}
    ps, rs, hs = res["product_seq"]["p50"], res["raw_sdk_seq"]["p50"], res["handwritten_seq"]["p50"]
    pc, rc, hc = (res[f"{s}_conc"]["tasks_per_s"] for s in ("product", "raw_sdk", "handwritten"))
    per_step = {
        "product_ms": round(ps / STEPS, 2),
        "raw_sdk_ms": round(rs / STEPS, 2),
        "extra_ms": round((ps - rs) / STEPS, 2),
    }
    ratios = {
        "sequential_latency_product_vs_raw_sdk": ratio(ps, rs),
        "sequential_latency_product_vs_handwritten": ratio(ps, hs),
        "concurrent_throughput_product_vs_raw_sdk": ratio(pc, rc),
        "concurrent_throughput_product_vs_handwritten": ratio(pc, hc),
        "concurrent_p50_latency_product_vs_raw_sdk": ratio(res["product_conc"]["p50"], res["raw_sdk_conc"]["p50"]),
        "worker_cpu_per_task_product_vs_handwritten": ratio(cpu["product"]["worker"], cpu["handwritten"]["worker"]),
    }
    payload = {"parameters": params, "results": res, "per_step_overhead": per_step,
               "ratios": ratios, "cpu_seconds_per_task": cpu, "repetitions_raw": reps}
    rows: Rows = [
        ("sequential latency p50 / p99", f"{ps:.0f} / {res['product_seq']['p99']:.0f} ms",
         f"raw SDK {rs:.0f} / {res['raw_sdk_seq']['p99']:.0f} ms", f"{ratios['sequential_latency_product_vs_raw_sdk']}x"),
        ("per-step overhead (p50 ÷ 3)", f"{per_step['product_ms']:.1f} ms", f"raw SDK {per_step['raw_sdk_ms']:.1f} ms",
         f"+{per_step['extra_ms']:.1f} ms/step"),
        ("sequential latency p50 vs hand-written", f"{ps:.0f} ms", f"hand-written {hs:.0f} ms",
         f"{ratios['sequential_latency_product_vs_handwritten']}x"),
        (f"concurrency {params['concurrency']}: tasks/s", f"{pc:.1f}", f"raw SDK {rc:.1f}",
         f"{ratios['concurrent_throughput_product_vs_raw_sdk']}x"),
        (f"concurrency {params['concurrency']}: tasks/s vs hand-written", f"{pc:.1f}", f"hand-written {hc:.1f}",
         f"{ratios['concurrent_throughput_product_vs_handwritten']}x"),
        (f"concurrency {params['concurrency']}: p50 / p99", f"{res['product_conc']['p50']:.0f} / {res['product_conc']['p99']:.0f} ms",
         f"raw SDK {res['raw_sdk_conc']['p50']:.0f} / {res['raw_sdk_conc']['p99']:.0f} ms",
         f"{ratios['concurrent_p50_latency_product_vs_raw_sdk']}x"),
        *_cpu_rows(cpu),
    ]
    return payload, rows


def _cpu_rows(cpu: dict[str, dict[str, float | None]]) -> Rows:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f}"

    roles = ("worker", "api", "temporal", "postgres", "fake_llm")
    head = "CPU ms/task " + " / ".join(roles)
    return [(head if i == 0 else "", SIDE_NAMES[side], " / ".join(ms(cpu[side].get(r)) for r in roles), "")
            for i, side in enumerate(cpu)]


# --- 2. throughput ---------------------------------------------------------------------------


def redis_bench_url() -> str | None:
    """REDIS_URL with its DB number replaced by a dedicated one (BENCH_REDIS_DB, default 13)."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    parts = urlsplit(url)
    db = os.environ.get("BENCH_REDIS_DB", "13")
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


async def _product_batch(env: BenchEnv, prod: Product, n: int, limit_s: float) -> float:
    """Submit n tasks at once; seconds from the first submit until the last is completed."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=prod.api_url, headers=prod.headers, timeout=60,
                                 limits=limits) as http, DoneWatcher(env.db_url) as watcher:
        t0 = time.time()
        ids = await asyncio.gather(*(submit(http, f"{PROMPT} #{i}") for i in range(n)))
        done = await asyncio.wait_for(asyncio.gather(*(watcher.done_at(i) for i in ids)), limit_s)
        return max(done) - t0


async def _raw_batch(env: BenchEnv, tq: str, n: int, limit_s: float, *, handwritten: bool = False) -> float:
    client = await Client.connect(env.temporal_address)

    def start(i: int):  # type: ignore[no-untyped-def]
        wid = uuid.uuid4().hex
        if handwritten:
            return client.start_workflow(HANDWRITTEN_WORKFLOW, PlanInput(wid, f"{PROMPT} #{i}"), id=f"hw-{wid}",
                                         task_queue=tq, execution_timeout=_td(limit_s))
        return client.start_workflow(RAW_WORKFLOW, f"{PROMPT} #{i}", id=f"raw-{wid}",
                                     task_queue=tq, execution_timeout=_td(limit_s))

    t0 = time.perf_counter()
    handles = await asyncio.gather(*(start(i) for i in range(n)))
    await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), limit_s)
    return time.perf_counter() - t0


def _celery_batch(n: int, timeout: float, queue: str) -> float:
    from celery import chain

    from benchmarks.baselines.celery_chain import llm_call

    def make(i: int):  # type: ignore[no-untyped-def]
        return chain(llm_call.s(f"{PROMPT} #{i}").set(queue=queue),
                     *(llm_call.s().set(queue=queue) for _ in range(STEPS - 1)))

    t0 = time.perf_counter()
    results = [make(i).apply_async() for i in range(n)]
    deadline = time.monotonic() + timeout
    for r in results:
        r.get(timeout=max(1.0, deadline - time.monotonic()))
    return time.perf_counter() - t0


def throughput(env: BenchEnv, quick: bool) -> Result:
    cores = os.cpu_count() or 1
    latency = 0.1 if quick else 0.5
    n = 10 if quick else 200
    params = {
        "tasks": n, "steps": STEPS, "llm_latency_s": latency,
        "ideal_tasks_per_s": round(n / (STEPS * latency), 1),
        "celery_prefork_tasks": 2 if quick else 30,
        "celery_prefork_concurrency": cores, "celery_threads_concurrency": 200,
        "repetitions": 1 if quick else 3,
        "note": "all tasks submitted at once; tasks/s = tasks ÷ (last completion - first submit). "
                "The product also makes a plan call (4 LLM calls per task vs 3); ideal = tasks ÷ "
                "(3 x latency). Celery prefork is LLM-bound at cores ÷ (3 x latency) tasks/s "
                "whatever the task count, so it runs fewer tasks to stay bounded in time.",
    }
    ideal = n / (STEPS * latency)
    fake = env.fake(latency)
    timeout = 120 if quick else 600
    sides: dict[str, list[float]] = {"product": [], "handwritten": [], "raw_sdk": []}
    cpu_reps: dict[str, list[dict[str, float | None]]] = {s: [] for s in SIDE_NAMES}
    with (env.product(fake) as prod, env.raw_worker(fake) as (raw_tq, raw_pid),
          env.handwritten_worker(fake) as (hw_tq, hw_pid)):
        pids = _side_pids(env, fake, prod, raw_pid, hw_pid)
        asyncio.run(_raw_batch(env, hw_tq, 1, 60, handwritten=True))  # warm-up, as the product's
        for _ in range(params["repetitions"]):
            for side, batch in (
                ("product", lambda: _product_batch(env, prod, n, timeout)),
                ("handwritten", lambda: _raw_batch(env, hw_tq, n, timeout, handwritten=True)),
                ("raw_sdk", lambda: _raw_batch(env, raw_tq, n, timeout)),
            ):
                with CpuMeter(pids[side]) as meter:
                    sides[side].append(n / asyncio.run(batch()))
                cpu_reps[side].append(meter.per_task(n))
    cpu = {side: median_per_task(reps) for side, reps in cpu_reps.items()}

    celery_note = None
    broker = redis_bench_url()
    if broker is None:
        celery_note = "Celery baselines skipped: REDIS_URL is not set"
    elif importlib.util.find_spec("celery") is None:
        celery_note = "Celery baselines skipped: celery is not installed (pip install '.[dev]')"
    else:
        import redis

        rds = redis.Redis.from_url(broker)
        rds.flushdb()  # our dedicated DB only
        os.environ["BENCH_CELERY_BROKER"] = broker
        from benchmarks.baselines import celery_chain

        celery_chain.app.conf.broker_url = broker
        celery_chain.app.conf.result_backend = broker
        try:
            for label, pool, conc, count in (
                ("celery_prefork", "prefork", cores, params["celery_prefork_tasks"]),
                ("celery_threads", "threads", 200, n),
            ):
                sides[label] = []
                with env.celery_worker(broker, fake, pool, conc) as queue:
                    _celery_batch(1, 60, queue)  # warm-up: the worker is consuming
                    for _ in range(params["repetitions"]):
                        sides[label].append(count / _celery_batch(count, timeout, queue))
        finally:
            rds.flushdb()
            rds.close()

    res = {}
    for side, vals in sides.items():
        med = sorted(vals)[(len(vals) - 1) // 2]
        res[side] = {"tasks_per_s": round(med, 2), "fraction_of_ideal": round(med / ideal, 3),
                     "all_repetitions": [round(v, 2) for v in vals]}
    prod_tps = res["product"]["tasks_per_s"]
    ratios = {f"product_vs_{side}": ratio(prod_tps, r["tasks_per_s"])
              for side, r in res.items() if side != "product"}
    ratios["worker_cpu_per_task_product_vs_handwritten"] = ratio(cpu["product"]["worker"],
                                                                 cpu["handwritten"]["worker"])
    payload = {"parameters": params, "results": res, "ratios": ratios,
               "cpu_seconds_per_task": cpu, "skipped": celery_note}
    names = {"product": "this product", "handwritten": "hand-written Temporal", "raw_sdk": "raw Temporal SDK",
             "celery_prefork": f"Celery prefork c={cores}", "celery_threads": "Celery threads c=200"}
    rows: Rows = []
    for side, r in res.items():
        rows.append((f"{names[side]}: tasks/s (of ideal {ideal:.0f})", f"{r['tasks_per_s']:.1f}",
                     f"{r['fraction_of_ideal'] * 100:.0f}% of ideal",
                     "" if side == "product" else f"product {ratios[f'product_vs_{side}']}x"))
    if celery_note:
        rows.append(("Celery baselines", "skipped", celery_note, ""))
    rows += _cpu_rows(cpu)
    return payload, rows


# --- 3. api ----------------------------------------------------------------------------------


async def _open_loop(make: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
                     http: httpx.AsyncClient, rate: float, duration: float) -> dict[str, Any]:
    """Send `rate`/s for `duration` s on schedule, whatever earlier requests are doing; latency is
    measured from the scheduled send time, so queueing (client or server) shows."""
    n = max(1, int(rate * duration))
    lats: list[float] = []
    errors = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        try:
            resp = await make(http, i)
            if resp.status_code >= 400:
                errors += 1
                return
        except httpx.HTTPError:
            errors += 1
            return
        lats.append(time.perf_counter() - scheduled)

    tasks = []
    t0 = time.perf_counter()
    late = 0.0
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    _done, pending = await asyncio.wait(tasks, timeout=duration + 15)
    for t in pending:
        t.cancel()
    errors += len(pending)
    return {"rate": rate, "sent": n, "errors": errors, "max_send_lag_ms": round(late * 1000, 1),
            **summary_ms(lats)}


def api(env: BenchEnv, quick: bool) -> Result:
    goals = {"post_p99_ms": 50.0, "get_p99_ms": 10.0}
    params = {
        "post_rate": 50, "get_rate": 200, "duration_s": 1.0 if quick else 5.0,
        "ladder_step_s": 1.0 if quick else 3.0,
        "post_ladder": [50] if quick else [25, 50, 100, 150, 200, 300],
        "get_ladder": [200] if quick else [100, 200, 400, 600, 800],
        "repetitions": 1 if quick else 3, "goals": goals,
        "note": "open loop, async httpx from the harness process, RATE_LIMIT raised. POST at the "
                "fixed rate runs with a worker executing the submitted tasks (LLM latency 0), "
                "which then drain before the next repetition; GET, the ladders and POST without a "
                "worker run on a second API whose workflows start but are not executed. Ladders "
                "run once and stop at the first rung whose p99 misses the goal or that has errors",
    }
    fake = env.fake(0.0)

    def meter(pid: int) -> Callable[[], float]:
        proc = psutil.Process(pid)

        def cpu() -> float:
            t = proc.cpu_times()
            return t.user + t.system

        return cpu

    async def fixed(fn: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
                    http: httpx.AsyncClient, prod: Product, rate: float) -> dict[str, Any]:
        cpu = meter(prod.api_pid)
        c0 = cpu()
        r = await _open_loop(fn, http, rate, params["duration_s"])
        # CPU the API process spent per request: what the rate it can hold on an idle core is
        # made of, independent of how loaded the machine is.
        r["api_cpu_ms_per_request"] = round(1000 * (cpu() - c0) / max(1, r["sent"]), 2)
        return r

    def client(prod: Product) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        return httpx.AsyncClient(base_url=prod.api_url, headers=prod.headers, timeout=10, limits=limits)

    async def post(h: httpx.AsyncClient, i: int) -> httpx.Response:
        return await h.post("/tasks", json={"description": f"{PROMPT} #{i}"})

    async def with_worker(prod: Product) -> dict[str, Any]:
        out: dict[str, Any] = {"post_fixed": [], "drain_s": []}
        async with client(prod) as http:
            await _open_loop(post, http, 10, 0.5)  # warm the connection pool and the path
            await wait_queue_drained(env.db_url, prod.task_queue, 120)
            for _ in range(params["repetitions"]):
                out["post_fixed"].append(await fixed(post, http, prod, params["post_rate"]))
                t0 = time.perf_counter()
                drained = await wait_queue_drained(env.db_url, prod.task_queue, 300)
                out["drain_s"].append(round(time.perf_counter() - t0, 1) if drained else None)
        return out

    async def fixed_pair(prod: Product, http: httpx.AsyncClient, prefix: str) -> tuple[dict[str, Any], Any]:
        """POST and GET at the fixed rates, `repetitions` times ({prefix}post_fixed,
        {prefix}get_fixed), and the GET it used (over tasks it submitted)."""
        ids = [await submit(http, f"{PROMPT} #{i}") for i in range(20)]

        async def get(h: httpx.AsyncClient, i: int) -> httpx.Response:
            return await h.get(f"/tasks/{ids[i % len(ids)]}")

        await _open_loop(get, http, 50, 0.5)  # warm the connection pool and both paths
        await _open_loop(post, http, 10, 0.5)
        out: dict[str, Any] = {f"{prefix}post_fixed": [], f"{prefix}get_fixed": []}
        for _ in range(params["repetitions"]):
            out[f"{prefix}post_fixed"].append(await fixed(post, http, prod, params["post_rate"]))
            out[f"{prefix}get_fixed"].append(await fixed(get, http, prod, params["get_rate"]))
        return out, get

    async def handwritten(prod: Product) -> dict[str, Any]:
        async with client(prod) as http:
            out, _get = await fixed_pair(prod, http, "handwritten_")
        return out

    async def without_worker(prod: Product) -> dict[str, Any]:
        async with client(prod) as http:
            out, get = await fixed_pair(prod, http, "")
            out["post_fixed_no_worker"] = out.pop("post_fixed")
            for kind, fn, goal in (("post", post, goals["post_p99_ms"]), ("get", get, goals["get_p99_ms"])):
                ladder, held = [], None
                for rate in params[f"{kind}_ladder"]:
                    r = await _open_loop(fn, http, rate, params["ladder_step_s"])
                    ladder.append(r)
                    if r["errors"] or r.get("p99", float("inf")) > goal:
                        break
                    held = rate
                out[f"{kind}_ladder"] = ladder
                out[f"{kind}_max_rate_within_goal"] = held
            return out

    with env.product(fake) as prod:
        out = asyncio.run(with_worker(prod))
    with env.product(fake, worker=False) as prod:
        out |= asyncio.run(without_worker(prod))
    with env.handwritten_api() as hw:
        out |= asyncio.run(handwritten(hw))
    post_fixed = median_run(out["post_fixed"], "p99")
    post_alone = median_run(out["post_fixed_no_worker"], "p99")
    get_fixed = median_run(out["get_fixed"], "p99")
    hw_post = median_run(out["handwritten_post_fixed"], "p99")
    hw_get = median_run(out["handwritten_get_fixed"], "p99")
    payload = {
        "parameters": params,
        "results": {
            "post_tasks": post_fixed, "post_tasks_without_worker": post_alone, "get_task": get_fixed,
            "handwritten_post_tasks": hw_post, "handwritten_get_task": hw_get,
            "drain_s": out["drain_s"],
            "post_max_rate_within_goal": out["post_max_rate_within_goal"],
            "get_max_rate_within_goal": out["get_max_rate_within_goal"],
            "post_ladder": out["post_ladder"], "get_ladder": out["get_ladder"],
        },
        "ratios": {
            "post_p99_vs_goal": ratio(post_fixed.get("p99"), goals["post_p99_ms"]),
            "get_p99_vs_goal": ratio(get_fixed.get("p99"), goals["get_p99_ms"]),
            # Both without a worker running, same rates, same machine, same run.
            "post_api_cpu_product_vs_handwritten": ratio(post_alone["api_cpu_ms_per_request"],
                                                         hw_post["api_cpu_ms_per_request"]),
            "get_api_cpu_product_vs_handwritten": ratio(get_fixed["api_cpu_ms_per_request"],
                                                        hw_get["api_cpu_ms_per_request"]),
            "get_p99_product_vs_handwritten": ratio(get_fixed.get("p99"), hw_get.get("p99")),
        },
        "repetitions_raw": {"post": out["post_fixed"], "post_without_worker": out["post_fixed_no_worker"],
                            "get": out["get_fixed"], "handwritten_post": out["handwritten_post_fixed"],
                            "handwritten_get": out["handwritten_get_fixed"]},
    }
    rows: Rows = [
        (f"POST /tasks @ {params['post_rate']}/s p50 / p99, worker running the tasks",
         f"{_fmt(post_fixed.get('p50'))} / {_fmt(post_fixed.get('p99'))} ms", f"goal p99 ≤ {goals['post_p99_ms']:g} ms",
         f"{payload['ratios']['post_p99_vs_goal']}x goal"),
        ("POST /tasks p50 / p99 without a worker",
         f"{_fmt(post_alone.get('p50'))} / {_fmt(post_alone.get('p99'))} ms",
         f"hand-written {_fmt(hw_post.get('p50'))} / {_fmt(hw_post.get('p99'))} ms", ""),
        ("API CPU per POST: with worker / without",
         f"{post_fixed['api_cpu_ms_per_request']} / {post_alone['api_cpu_ms_per_request']} ms",
         f"hand-written {hw_post['api_cpu_ms_per_request']} ms; goal 5 ms",
         f"{payload['ratios']['post_api_cpu_product_vs_handwritten']}x"),
        (f"GET /tasks/{{id}} @ {params['get_rate']}/s p50 / p99",
         f"{_fmt(get_fixed.get('p50'))} / {_fmt(get_fixed.get('p99'))} ms",
         f"hand-written {_fmt(hw_get.get('p50'))} / {_fmt(hw_get.get('p99'))} ms; goal p99 ≤ {goals['get_p99_ms']:g} ms",
         f"{payload['ratios']['get_p99_vs_goal']}x goal"),
        ("API CPU per GET", f"{get_fixed['api_cpu_ms_per_request']} ms",
         f"hand-written {hw_get['api_cpu_ms_per_request']} ms",
         f"{payload['ratios']['get_api_cpu_product_vs_handwritten']}x"),
        ("POST highest rate within goal", f"{out['post_max_rate_within_goal'] or 'none'} /s",
         f"ladder {params['post_ladder']}", ""),
        ("GET highest rate within goal", f"{out['get_max_rate_within_goal'] or 'none'} /s",
         f"ladder {params['get_ladder']}", ""),
    ]
    return payload, rows


# --- 4. memory -------------------------------------------------------------------------------


def memory(env: BenchEnv, quick: bool) -> Result:
    try:
        mod = importlib.import_module("benchmarks.memory_bench")
    except ImportError as err:
        msg = f"not available (benchmarks.memory_bench: {err})"
        return {"available": False, "reason": msg}, [("long-term memory", "not available", msg, "")]
    out = mod.run(env, quick)
    rows: Rows = []
    for k, v in (out.get("summary") or out).items():
        if isinstance(v, (int, float, str)):
            rows.append((str(k), str(v), "", ""))
    return {"available": True, **out}, rows[:12] or [("long-term memory", "ran", "see JSON", "")]


# --- 5. startup ------------------------------------------------------------------------------


def _stack_roles(up_pid: int, data_dir: Path) -> dict[str, psutil.Process]:
    """The processes of one `up`: its worker, API and Temporal children, and the embedded
    PostgreSQL (pg_ctl daemonizes it, so it is found through postmaster.pid)."""
    roles: dict[str, psutil.Process] = {"up": psutil.Process(up_pid)}
    for child in roles["up"].children():
        cmd = " ".join(child.cmdline())
        role = "api" if "uvicorn" in cmd else "worker" if "-m worker" in cmd else "temporal" if "temporal" in cmd else None
        if role:
            roles[role] = child
    pid_file = data_dir / "pg" / "postmaster.pid"
    if pid_file.exists():
        roles["postgres"] = psutil.Process(int(pid_file.read_text().split()[0]))
    return roles


def _rss_mb(proc: psutil.Process) -> float:
    total = 0
    for p in (proc, *proc.children(recursive=True)):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


def _loads_torch(proc: psutil.Process) -> bool:
    try:
        return any("libtorch" in m.path for m in proc.memory_maps(grouped=True))
    except psutil.Error:
        return False


def _idle_footprint(up_pid: int, data_dir: Path, settle_s: float) -> dict[str, Any]:
    """RSS per process of the `up` stack `settle_s` after ready (background warm-ups done), and
    which processes have torch mapped."""
    time.sleep(settle_s)
    roles = _stack_roles(up_pid, data_dir)
    # `up` itself is counted alone: its children are the other roles.
    rss = {role: round(p.memory_info().rss / 2**20, 1) if role == "up" else _rss_mb(p) for role, p in roles.items()}
    return {"settle_s": settle_s, "rss_mb": rss, "total_rss_mb": round(sum(rss.values()), 1),
            "torch_loaded": {role: _loads_torch(p) for role, p in roles.items() if role in ("api", "worker")}}


def _up_once(procs: Procs, data_dir: Path, cache_dir: Path, timeout: float, idle: dict[str, Any] | None = None,
             settle_s: float = 0.0) -> float:
    # The cache holds the embedding model's export: empty for a cold start, as right after install.
    env = child_env({"COLUMNS": "200", "XDG_CACHE_HOME": str(cache_dir)})
    for name in ("DATABASE_URL", "TEMPORAL_ADDRESS", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        env.pop(name, None)
    args = [*ORCHESTRATOR, "up", "--data-dir", str(data_dir), "--api-port", str(free_port()),
            "--temporal-port", str(free_port()), "--ui-port", str(free_port()), "--no-ui"]
    t0 = time.perf_counter()
    proc = procs.spawn("up", args, env, stdout_pipe=True)
    try:
        read_ready_line(proc, "Press Ctrl-C to stop", timeout)
        ready = time.perf_counter() - t0
        # A first start leaves the embedding model's export behind (the worker makes it after
        # ready), as a user's does; stopped before, the next start would not be warm. Bounded:
        # where the worker runs torch in bfloat16 there is no export to wait for.
        deadline = time.monotonic() + 30
        while not any(cache_dir.rglob("*.onnx")) and time.monotonic() < deadline:
            time.sleep(0.5)
        if idle is not None:
            idle.update(_idle_footprint(proc.pid, data_dir, settle_s))
        return ready
    finally:
        # SIGTERM by pid: `up` stops its worker, API, Temporal and PostgreSQL itself.
        procs.stop(proc, 60)


def startup(env: BenchEnv | None, quick: bool) -> Result:
    reps = 1 if quick else 3
    params = {"repetitions": reps, "command": "python -m durable_orchestrator.cli up --no-ui (free ports)",
              "ready": "'Press Ctrl-C to stop' printed",
              "cold": "new data dir (initdb, migrations, new Temporal db) and new cache (the embedding "
                      "model's export)", "warm": "same data dir and cache again"}
    root = Path(tempfile.mkdtemp(prefix="bench-up-"))
    procs = Procs(root / "logs")
    params["idle_footprint"] = ("RSS of each process of the stack (with its children), measured once "
                                "after the last warm start, settle_s after ready")
    settle = 5.0 if quick else 20.0
    cold, warm = [], []
    idle: dict[str, Any] = {}
    try:
        for i in range(reps):
            d = root / f"d{i}"
            cache = root / f"cache{i}"
            cold.append(_up_once(procs, d, cache, 120))
            last = i == reps - 1
            warm.append(_up_once(procs, d, cache, 120, idle if last else None, settle))
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    res = {"cold": {**summary_ms(cold), "all_s": [round(x, 2) for x in cold]},
           "warm": {**summary_ms(warm), "all_s": [round(x, 2) for x in warm]}}
    res["idle"] = idle
    payload = {"parameters": params, "results": res,
               "ratios": {"cold_vs_warm": ratio(res["cold"]["p50"], res["warm"]["p50"])}}
    rows: Rows = [
        ("`up` to ready, cold (median)", f"{res['cold']['p50'] / 1000:.2f} s", f"max {res['cold']['max'] / 1000:.2f} s", ""),
        ("`up` to ready, warm (median)", f"{res['warm']['p50'] / 1000:.2f} s", f"max {res['warm']['max'] / 1000:.2f} s",
         f"cold {payload['ratios']['cold_vs_warm']}x warm"),
        ("idle RSS of the stack", f"{idle.get('total_rss_mb')} MB",
         " / ".join(f"{k} {v:.0f}" for k, v in idle.get("rss_mb", {}).items()), ""),
        ("torch loaded at idle", ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in idle.get("torch_loaded", {}).items()),
         "", ""),
    ]
    return payload, rows


SUITES: dict[str, Callable[[Any, bool], Result]] = {
    "overhead": overhead,
    "throughput": throughput,
    "api": api,
    "memory": memory,
    "startup": startup,
    "streaming": streaming,
    "fairness": fairness,
}
NEEDS_ENV = {"overhead", "throughput", "api", "memory", "streaming", "fairness"}
