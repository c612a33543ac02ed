"""The `fairness` suite: one user's backlog against another user's single task.

User A submits a backlog at once, then user B submits one task. Measured with the per-user
running bound on (ORCH_USER_MAX_RUNNING_TASKS) and off, on the same machine in the same run:
B's latency (submit -> completed) against B alone, and A's backlog throughput, which the bound
must not lower while it is above what the machine can run at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from benchmarks import product_cli
from benchmarks.db import DoneWatcher
from benchmarks.env import BenchEnv, Product, submit
from benchmarks.report import ratio

Rows = list[tuple[str, str, str, str]]


async def _one(env: BenchEnv, prod: Product, key: str, limit_s: float) -> float:
    async with httpx.AsyncClient(base_url=prod.api_url, headers={"X-API-Key": key}, timeout=60) as http, \
            DoneWatcher(env.db_url) as watcher:
        t0 = time.time()
        task_id = await submit(http, "just one")
        return await asyncio.wait_for(watcher.done_at(task_id), limit_s) - t0


async def _backlog_then_one(env: BenchEnv, prod: Product, a_key: str, b_key: str, n: int,
                            limit_s: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=prod.api_url, headers={"X-API-Key": a_key}, timeout=60,
                                 limits=limits) as a_http, \
            httpx.AsyncClient(base_url=prod.api_url, headers={"X-API-Key": b_key}, timeout=60) as b_http, \
            DoneWatcher(env.db_url) as watcher:
        t0 = time.time()
        a_ids = await asyncio.gather(*(submit(a_http, f"backlog #{i}") for i in range(n)))
        b_sent = time.time()
        b_id = await submit(b_http, "just one")
        b_done = await asyncio.wait_for(watcher.done_at(b_id), limit_s)
        a_done = await asyncio.wait_for(asyncio.gather(*(watcher.done_at(i) for i in a_ids)), limit_s)
    return {"b_latency_s": b_done - b_sent, "a_tasks_per_s": n / (max(a_done) - t0),
            "a_done_before_b": sum(d < b_done for d in a_done)}


def fairness(env: BenchEnv, quick: bool) -> tuple[dict[str, Any], Rows]:
    n = 20 if quick else 100
    bound = 2 if quick else 10
    params = {"backlog_tasks": n, "user_max_running_tasks": bound, "llm_latency_s": 0.1 if quick else 0.2,
              "note": "A submits the backlog at once, then B one task; B latency = submit -> completed "
                      "(terminal write seen in PostgreSQL); alone = B with no backlog"}
    fake = env.fake(params["llm_latency_s"])
    limit = 120 if quick else 600
    res: dict[str, Any] = {}
    for label, value in (("bounded", bound), ("unbounded", 0)):
        with env.product(fake, settings={"ORCH_USER_MAX_RUNNING_TASKS": str(value)}) as prod:
            a_key = product_cli.create_key(env.db_url, f"bench-a-{uuid.uuid4().hex[:6]}")
            b_key = product_cli.create_key(env.db_url, f"bench-b-{uuid.uuid4().hex[:6]}")
            alone = asyncio.run(_one(env, prod, b_key, limit))
            run = asyncio.run(_backlog_then_one(env, prod, a_key, b_key, n, limit))
            res[label] = {"b_alone_s": round(alone, 3), **{k: round(v, 3) for k, v in run.items()}}
    ratios = {
        "b_latency_bounded_vs_alone": ratio(res["bounded"]["b_latency_s"], res["bounded"]["b_alone_s"]),
        "b_latency_unbounded_vs_alone": ratio(res["unbounded"]["b_latency_s"], res["unbounded"]["b_alone_s"]),
        "a_throughput_bounded_vs_unbounded": ratio(res["bounded"]["a_tasks_per_s"], res["unbounded"]["a_tasks_per_s"]),
    }
    rows: Rows = [
        (f"B's task under A's {n}-task backlog, bound {bound}",
         f"{res['bounded']['b_latency_s']:.2f} s", f"alone {res['bounded']['b_alone_s']:.2f} s",
         f"{ratios['b_latency_bounded_vs_alone']}x"),
        ("the same without a bound", f"{res['unbounded']['b_latency_s']:.2f} s",
         f"alone {res['unbounded']['b_alone_s']:.2f} s", f"{ratios['b_latency_unbounded_vs_alone']}x"),
        ("A's backlog tasks/s, bound on / off", f"{res['bounded']['a_tasks_per_s']:.2f}",
         f"{res['unbounded']['a_tasks_per_s']:.2f}", f"{ratios['a_throughput_bounded_vs_unbounded']}x"),
    ]
    return {"parameters": params, "results": res, "ratios": ratios}, rows
