"""Long-term memory benchmark: `run(quick) -> dict` (JSON-able; `summary` holds flat figures).

1. Embedding throughput of the real model (batched sentences/s, single-query latency).
2. `POST /memory/search` HTTP latency p50/p99 (real uvicorn on 127.0.0.1, sequential requests,
   real query embedding) with N memories of ONE user (the worst case for per-user indexes).
   The N memories are synthetic texts whose embeddings are bulk-inserted into Postgres
   directly (clustered unit vectors), because embedding 100k texts at ≈350/s would take
   minutes; the search path (embed query → catch-up → FAISS → hydrate) is the real one.
3. ANN at scale: FAISS HNSW (the service's large-index setting) vs exact search, recall@10 and
   single-query QPS over synthetic clustered 384-d vectors; pgvector HNSW on the embedded
   Postgres over the same vectors and queries; the FAISS/pgvector QPS ratio at equal recall.

Postgres: $DATABASE_URL when set (a scratch table is created and dropped), else an embedded
PostgreSQL in a temp dir. Only 127.0.0.1 / unix sockets are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import struct
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger(__name__)
DIM = 384
QUICK = {"http_sizes": [500], "http_queries": 20, "embed_n": 32,
         "ann_n": 1_000, "ann_queries": 30, "pg_n": 500, "efs": [16, 64]}

# The pgvector side-by-side runs at pg_n (FAISS rebuilt on the same prefix when pg_n < ann_n);
# FAISS alone runs at ann_n = 1M. Building pgvector's HNSW over 1M vectors takes long on 2
# cores: run it separately with `--full --parts=ann --pg_n=1000000` when there is time.
FULL = {"http_sizes": [10_000, 100_000], "http_queries": 500, "embed_n": 2_000,
        "ann_n": 1_000_000, "ann_queries": 500, "pg_n": 100_000, "efs": [16, 32, 64, 128, 256]}


def _pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if xs else float("nan")


_CENTRES: dict[tuple[int, int], np.ndarray] = {}


def _centres(topics: int, subtopics: int) -> np.ndarray:
    """Fixed two-level topic structure (same for every seed, so queries come from the data's
    distribution): `topics` unit centres, each with `subtopics` unit sub-centres around it."""
    key = (topics, subtopics)
    if key not in _CENTRES:
        rng = np.random.default_rng(12345)
        top = rng.standard_normal((topics, DIM)).astype(np.float32)
        top /= np.linalg.norm(top, axis=1, keepdims=True)
        sub = np.repeat(top, subtopics, axis=0) + (0.8 / np.sqrt(DIM)) * rng.standard_normal(
            (topics * subtopics, DIM)).astype(np.float32)
        _CENTRES[key] = sub / np.linalg.norm(sub, axis=1, keepdims=True)
    return _CENTRES[key]


def synthetic_vectors(n: int, *, seed: int = 0, topics: int = 1_000, subtopics: int = 50,
                      noise: float = 0.6) -> np.ndarray:
    """Unit vectors in a two-level topic structure (topic → sub-topic → point), closer to real
    sentence embeddings than uniform noise, which no ANN index handles well."""
    centres = _centres(topics, subtopics)
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        x = centres[rng.integers(0, len(centres), m)] + (
            noise / np.sqrt(DIM)) * rng.standard_normal((m, DIM)).astype(np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


WORDS = ("revenue sales quarter growth market customer product launch team hiring budget cost "
         "cloud pricing report analysis risk supplier contract travel weather coffee research "
         "paper model training dataset latency database index memory agent planner").split()


def synthetic_text(i: int, rng: np.random.Generator) -> str:
    return f"note {i}: " + " ".join(rng.choice(WORDS, 12))


# --- Postgres ------------------------------------------------------------------------------


@contextlib.contextmanager
def _postgres():  # type: ignore[no-untyped-def]
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from durable_orchestrator.devstack import EmbeddedPostgres

    tmp = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    pg = EmbeddedPostgres(tmp / "pgdata")
    try:
        yield pg.start()
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# --- 1. embedding ---------------------------------------------------------------------------


def bench_embedding(n: int) -> dict[str, Any]:
    from durable_orchestrator.settings import Settings
    from memory.embedder import Embedder

    emb = Embedder(threads=Settings().embedding_threads)
    t0 = time.perf_counter()
    emb.encode_sync(["warm up"])
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    texts = [synthetic_text(i, rng) for i in range(n)]
    t0 = time.perf_counter()
    emb.encode_sync(texts)
    batch_s = time.perf_counter() - t0
    lats = []
    for t in texts[:50]:
        t1 = time.perf_counter()
        emb.encode_sync([t])
        lats.append((time.perf_counter() - t1) * 1000)
    return {"sentences": n, "sentences_per_s": round(n / batch_s, 1),
            "query_embed_ms_p50": round(_pct(lats, 50), 2), "model_load_s": round(load_s, 2)}


# --- 2. HTTP search latency ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _bulk_insert(url: str, user: str, n: int, seed: int) -> float:
    import asyncpg

    from durable_orchestrator.data.engine import plain_url

    vecs = synthetic_vectors(n, seed=seed)
    rng = np.random.default_rng(seed)
    conn = await asyncpg.connect(plain_url(url))
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


async def bench_http(url: str, sizes: list[int], n_queries: int) -> dict[str, Any]:
    import httpx
    import uvicorn
    from fastapi import FastAPI

    from api.errors import install_error_handlers
    from api.routes import memory as memory_routes
    from durable_orchestrator.auth.api_keys import create_key
    from durable_orchestrator.data.engine import create_engine
    from durable_orchestrator.settings import Settings
    from memory.service import MemoryService

    out: dict[str, Any] = {}
    engine = create_engine(url)
    rng = np.random.default_rng(7)
    queries = [synthetic_text(10**9 + i, rng) for i in range(n_queries)]
    try:
        for n in sizes:
            user = f"bench-{uuid.uuid4().hex[:8]}"
            insert_s = await _bulk_insert(url, user, n, seed=n)
            key, _ = await create_key(engine, user)
            settings = Settings(database_url=url, data_dir=Path(tempfile.mkdtemp()), memory_snapshot=False)
            app = FastAPI()
            install_error_handlers(app)
            app.include_router(memory_routes.router)
            app.state.settings, app.state.engine = settings, engine
            svc = MemoryService(engine, settings)
            app.state.memory = svc
            t0 = time.perf_counter()
            await svc.sync(force=True)
            build_s = time.perf_counter() - t0
            port = _free_port()
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                   access_log=False, lifespan="off"))
            serve = asyncio.create_task(server.serve())
            for _ in range(1_000):  # uvicorn exposes no start event; bounded poll (≤ 10 s)
                if server.started:
                    break
                await asyncio.sleep(0.01)
            lats: list[float] = []
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                    h = {"X-API-Key": key}
                    for q in queries[:10]:  # warm-up
                        (await http.post("/memory/search", json={"query": q, "limit": 10}, headers=h)).raise_for_status()
                    for q in queries:
                        t1 = time.perf_counter()
                        r = await http.post("/memory/search", json={"query": q, "limit": 10}, headers=h)
                        lats.append((time.perf_counter() - t1) * 1000)
                        assert r.status_code == 200 and len(r.json()["results"]) == 10, r.text
            finally:
                server.should_exit = True
                await serve
            log.info("http_search_measured", memories=n, p50=_pct(lats, 50), p99=_pct(lats, 99))
            out[str(n)] = {
                "memories": n, "index": svc.index.kind(user), "requests": len(lats),
                "p50_ms": round(_pct(lats, 50), 2), "p99_ms": round(_pct(lats, 99), 2),
                "bulk_insert_s": round(insert_s, 2), "index_build_from_postgres_s": round(build_s, 2),
            }
    finally:
        await engine.dispose()
    return out


# --- 3. ANN: FAISS vs exact vs pgvector --------------------------------------------------------


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def bench_faiss(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, efs: list[int],
                m: int, ef_construction: int) -> dict[str, Any]:
    import faiss

    idx = faiss.IndexHNSWFlat(DIM, m, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = ef_construction
    t0 = time.perf_counter()
    idx.add(base)
    build_s = time.perf_counter() - t0
    log.info("faiss_hnsw_built", vectors=len(base), secs=round(build_s, 1))
    flat = faiss.IndexFlatIP(DIM)
    flat.add(base)
    t0 = time.perf_counter()
    for q in queries[:50]:
        flat.search(q.reshape(1, -1), 10)
    exact_qps = 50 / (time.perf_counter() - t0)
    curve = []
    for ef in efs:
        idx.hnsw.efSearch = max(ef, 10)
        found = np.empty((len(queries), 10), dtype=np.int64)
        t0 = time.perf_counter()
        for i, q in enumerate(queries):  # one query at a time, as a service answers them
            found[i] = idx.search(q.reshape(1, -1), 10)[1][0]
        qps = len(queries) / (time.perf_counter() - t0)
        curve.append({"ef_search": ef, "recall_at_10": round(_recall(found, truth), 4), "qps": round(qps, 1)})
    return {"build_s": round(build_s, 1), "m": m, "ef_construction": ef_construction,
            "exact_flat_qps": round(exact_qps, 1), "curve": curve}


async def bench_pgvector(url: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                         efs: list[int], m: int, ef_construction: int) -> dict[str, Any]:
    import asyncpg

    from durable_orchestrator.data.engine import plain_url

    table = f"bench_vec_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(plain_url(url))

    def enc(v: np.ndarray) -> bytes:
        return struct.pack(">HH", DIM, 0) + np.asarray(v, dtype=">f4").tobytes()

    def dec(b: bytes) -> np.ndarray:
        return np.frombuffer(b[4:], dtype=">f4")

    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await conn.set_type_codec("vector", schema="public", encoder=enc, decoder=dec, format="binary")
        await conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, embedding vector({DIM}))")
        t0 = time.perf_counter()
        step = 50_000
        for s in range(0, len(base), step):
            await conn.copy_records_to_table(
                table, records=[(s + i, base[s + i]) for i in range(min(step, len(base) - s))])
        load_s = time.perf_counter() - t0
        await conn.execute("SET maintenance_work_mem = '4GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 1")
        t0 = time.perf_counter()
        await conn.execute(
            f"CREATE INDEX ON {table} USING hnsw (embedding vector_ip_ops) "
            f"WITH (m = {m}, ef_construction = {ef_construction})")
        build_s = time.perf_counter() - t0
        log.info("pgvector_hnsw_built", vectors=len(base), secs=round(build_s, 1))
        stmt = await conn.prepare(f"SELECT id FROM {table} ORDER BY embedding <#> $1 LIMIT 10")
        curve = []
        for ef in efs:
            await conn.execute(f"SET hnsw.ef_search = {max(ef, 10)}")
            found = np.full((len(queries), 10), -1, dtype=np.int64)
            for q in queries[:10]:
                await stmt.fetch(q)
            t0 = time.perf_counter()
            for i, q in enumerate(queries):
                ids = [r["id"] for r in await stmt.fetch(q)]
                found[i, : len(ids)] = ids
            qps = len(queries) / (time.perf_counter() - t0)
            curve.append({"ef_search": ef, "recall_at_10": round(_recall(found, truth), 4), "qps": round(qps, 1)})
        return {"load_s": round(load_s, 1), "build_s": round(build_s, 1), "m": m,
                "ef_construction": ef_construction, "curve": curve}
    finally:
        with contextlib.suppress(Exception):
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


def equal_recall_ratio(faiss_curve: list[dict], pg_curve: list[dict], target: float) -> dict[str, Any]:
    """Best QPS of each engine among settings reaching `target` recall@10 (or the highest
    recall both reach, when one of them never reaches the target)."""
    common = min(target, max(c["recall_at_10"] for c in faiss_curve), max(c["recall_at_10"] for c in pg_curve))
    f = max((c for c in faiss_curve if c["recall_at_10"] >= common), key=lambda c: c["qps"])
    p = max((c for c in pg_curve if c["recall_at_10"] >= common), key=lambda c: c["qps"])
    return {"recall_at_10_at_least": common, "faiss": f, "pgvector": p,
            "faiss_over_pgvector_qps": round(f["qps"] / p["qps"], 2)}


# --- entry point -----------------------------------------------------------------------------


def run(quick: bool, **overrides: Any) -> dict[str, Any]:
    """quick=True: tiny sizes, < 20 s. Overrides change the sizes (e.g. ann_n=200_000) or pick
    parts (parts=("embedding", "http", "ann"))."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = {**(QUICK if quick else FULL), **overrides}
    parts = set(cfg.pop("parts", ("embedding", "http", "ann")))
    from durable_orchestrator.settings import Settings

    s = Settings()
    m, efc = s.memory_hnsw_m, s.memory_hnsw_ef_construction
    t_start = time.perf_counter()
    out: dict[str, Any] = {"quick": quick, "config": cfg, "machine_cores": os.cpu_count()}
    summary: dict[str, Any] = {}
    if "embedding" in parts:
        out["embedding"] = bench_embedding(cfg["embed_n"])
        summary["embed_sentences_per_s"] = out["embedding"]["sentences_per_s"]
        summary["query_embed_ms_p50"] = out["embedding"]["query_embed_ms_p50"]

    from durable_orchestrator.data.engine import migrate

    with _postgres() as url:
        migrate(url)
        if "http" in parts:
            out["http_search"] = asyncio.run(bench_http(url, cfg["http_sizes"], cfg["http_queries"]))
            for k, v in out["http_search"].items():
                summary[f"search_p50_ms@{k}"] = v["p50_ms"]
                summary[f"search_p99_ms@{k}"] = v["p99_ms"]
        if "ann" in parts:
            out.update(bench_ann(url, cfg, m, efc))
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


def bench_ann(url: str, cfg: dict[str, Any], m: int, efc: int) -> dict[str, Any]:
    import faiss

    out: dict[str, Any] = {}
    n = cfg["ann_n"]
    base = synthetic_vectors(n, seed=42)
    queries = synthetic_vectors(cfg["ann_queries"], seed=4242)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(base)
    truth = flat.search(queries, 10)[1]
    del flat
    out["faiss"] = {"vectors": n, **bench_faiss(base, queries, truth, cfg["efs"], m, efc)}
    pg_n = min(cfg["pg_n"], n)
    if pg_n <= 0:  # FAISS only
        return out
    if pg_n < n:  # compare on the same data: ground truth for the smaller prefix
        flat = faiss.IndexFlatIP(DIM)
        flat.add(base[:pg_n])
        pg_truth = flat.search(queries, 10)[1]
        del flat
        faiss_same = {"vectors": pg_n, **bench_faiss(base[:pg_n], queries, pg_truth, cfg["efs"], m, efc)}
        out["faiss_at_pgvector_size"] = faiss_same
    else:
        pg_truth, faiss_same = truth, out["faiss"]
    out["pgvector"] = {"vectors": pg_n, **asyncio.run(
        bench_pgvector(url, base[:pg_n], queries, pg_truth, cfg["efs"], m, efc))}
    out["faiss_vs_pgvector"] = {"vectors": pg_n, **equal_recall_ratio(
        faiss_same["curve"], out["pgvector"]["curve"], 0.95)}
    return out


if __name__ == "__main__":
    import json
    import logging
    import sys

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))

    quick = "--full" not in sys.argv
    extra: dict[str, Any] = {}
    for a in sys.argv[1:]:
        if "=" in a:
            k, v = a[2:].split("=", 1)
            extra[k] = v.split(",") if k == "parts" else int(v)
    sys.stdout.write(json.dumps(run(quick, **extra), indent=2) + "\n")
