"""ANN at scale: FAISS HNSW (the service's large-index setting) vs exact search, recall@10 and
single-query QPS over synthetic clustered 384-d vectors; pgvector HNSW on the embedded
PostgreSQL over the same vectors and queries; the FAISS/pgvector QPS ratio at equal recall."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import uuid
from typing import Any

import asyncpg
import numpy as np
import structlog

from benchmarks.db import libpq_url
from benchmarks.synthetic import DIM, synthetic_vectors

log = structlog.get_logger(__name__)


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
    table = f"bench_vec_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(libpq_url(url))

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


def bench_ann(url: str, cfg: dict[str, Any], m: int, efc: int, faiss_threads: int) -> dict[str, Any]:
    import faiss

    # The service runs FAISS with `faiss_threads` OpenMP threads; measure it the same way.
    faiss.omp_set_num_threads(faiss_threads)
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
