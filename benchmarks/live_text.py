"""The `streaming` suite: how fast a step's streamed text reaches an event-stream client, and
what streaming costs in task throughput.

First token: the fake LLM stamps each streamed word with its send time (CLOCK_MONOTONIC, shared
by every process on the machine); the client subtracts it from the arrival time of each step's
first `step.delta`. Throughput: the same batch of tasks, nobody watching, with steps streamed
anyway (`ORCH_LLM_STREAM_UNWATCHED=true`: what streaming itself costs), as shipped (unwatched
steps get whole answers) and with streaming off (`ORCH_LLM_STREAM=false`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from benchmarks.env import BenchEnv, Product, submit
from benchmarks.report import ratio, summary_ms

Rows = list[tuple[str, str, str, str]]


async def _first_tokens(prod: Product, tasks: int, concurrency: int, limit_s: float) -> list[float]:
    """Seconds from the provider sending each step's first word to this client reading it."""
    lags: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=prod.api_url, headers=prod.headers, timeout=60) as http:

        async def one(i: int) -> None:
            async with sem:
                task_id = await submit(http, f"stream #{i}")
                async with aconnect_sse(http, "GET", f"/tasks/{task_id}/events") as source:
                    async for sse in source.aiter_sse():
                        now = time.monotonic_ns()
                        if sse.event == "step.delta":
                            data = sse.json()
                            if data["seq"] == 0 and data["attempt"] == 1 and data["text"].startswith("t"):
                                lags.append((now - int(data["text"][1:].split()[0])) / 1e9)
                        elif sse.event == "task.status" and sse.json()["status"] in {"completed", "failed", "cancelled"}:
                            return

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(tasks))), limit_s)
    return lags


async def _batch(env: BenchEnv, prod: Product, n: int, limit_s: float) -> float:
    from benchmarks.suites import _product_batch

    return n / await _product_batch(env, prod, n, limit_s)


def streaming(env: BenchEnv, quick: bool) -> tuple[dict[str, Any], Rows]:
    params = {
        "llm_latency_s": 0.1 if quick else 0.2, "words_per_answer": 20, "chunk_delay_s": 0.01,
        "first_token_tasks": 3 if quick else 30, "first_token_concurrency": 5,
        "throughput_tasks": 10 if quick else 100, "repetitions": 1 if quick else 3,
        "note": "first token: fake's send time of a step's first word -> SSE client reads it (same "
                "machine clock); throughput: tasks/s of one batch submitted at once, nobody watching: "
                "every step streamed, as shipped, streaming off",
    }
    limit = 120 if quick else 600
    args = ("--stream-words", str(params["words_per_answer"]), "--chunk-delay", str(params["chunk_delay_s"]),
            "--stamp-chunks")
    fake = env.fake(params["llm_latency_s"], *args)
    lags: list[float] = []
    tps: dict[str, list[float]] = {"stream_on": [], "shipped_unwatched": [], "stream_off": []}
    with env.product(fake, settings={"ORCH_LLM_STREAM_UNWATCHED": "true"}) as on:
        for _ in range(params["repetitions"]):
            tps["stream_on"].append(asyncio.run(_batch(env, on, params["throughput_tasks"], limit)))
    with env.product(fake) as shipped:
        lags = asyncio.run(_first_tokens(shipped, params["first_token_tasks"], params["first_token_concurrency"], limit))
        for _ in range(params["repetitions"]):
            tps["shipped_unwatched"].append(asyncio.run(_batch(env, shipped, params["throughput_tasks"], limit)))
    with env.product(fake, settings={"ORCH_LLM_STREAM": "false"}) as off:
        for _ in range(params["repetitions"]):
            tps["stream_off"].append(asyncio.run(_batch(env, off, params["throughput_tasks"], limit)))
    med = {k: sorted(v)[(len(v) - 1) // 2] for k, v in tps.items()}
    res = {"first_token_to_sse": summary_ms(lags),
           "tasks_per_s": {k: round(v, 2) for k, v in med.items()},
           "all_repetitions": {k: [round(x, 2) for x in v] for k, v in tps.items()}}
    ratios = {"throughput_stream_on_vs_off": ratio(med["stream_on"], med["stream_off"]),
              "throughput_shipped_unwatched_vs_off": ratio(med["shipped_unwatched"], med["stream_off"])}
    ft = res["first_token_to_sse"]
    rows: Rows = [
        ("first token -> SSE client p50 / p99", f"{ft.get('p50', 0):.1f} / {ft.get('p99', 0):.1f} ms",
         f"{ft.get('n', 0)} steps, target p99 <= 50 ms", ""),
        ("tasks/s, every step streamed / off", f"{med['stream_on']:.2f} / {med['stream_off']:.2f}",
         "what streaming costs", f"{ratios['throughput_stream_on_vs_off']}x"),
        ("tasks/s, as shipped (nobody watching) / off",
         f"{med['shipped_unwatched']:.2f} / {med['stream_off']:.2f}",
         "target >= 0.95x off", f"{ratios['throughput_shipped_unwatched_vs_off']}x"),
    ]
    return {"parameters": params, "results": res, "ratios": ratios}, rows
