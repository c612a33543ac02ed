"""The benchmark harness runs end to end in quick mode and writes valid result files.

Nothing here asserts speed (machines are noisy): only that the harness starts what it needs,
measures every side, cleans up after itself and writes the JSON the README table is built from."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

# Starts processes of its own: the `system` tier (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("subprocesses")

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_harness(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m benchmarks ARGS`; past `timeout` it gets SIGTERM first, on which it stops every
    server it started (PostgreSQL, Temporal run in their own sessions: a SIGKILL would orphan them)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", *args], cwd=REPO_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"the harness ran longer than {timeout:g}s: {(out + err)[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _processes_using(path: str) -> list[str]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if path in cmdline:
            found.append(cmdline[:200])
    return found


@pytest.mark.timeout(660)
def test_quick_overhead_and_memory_write_valid_json(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for name in ("DATABASE_URL", "TEMPORAL_ADDRESS"):
        env.pop(name, None)
    proc = run_harness(
        ["overhead", "memory", "--quick", "--results-dir", str(tmp_path), "--keep-workdir"],
        # A hang guard, not a speed check: the memory suite loads the embedding model in the
        # harness and again in its API process, each ~11 s idle and minutes on a loaded machine.
        env, timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "overhead" in proc.stdout and "raw SDK" in proc.stdout
    # Every server the run started (PostgreSQL, Temporal, fake LLM, worker, API) is gone.
    workdir = re.search(r"kept (\S+)", proc.stdout)
    assert workdir, proc.stdout[-2000:]
    try:
        assert _processes_using(workdir.group(1)) == []
    finally:
        shutil.rmtree(workdir.group(1), ignore_errors=True)

    overhead = json.loads((tmp_path / "overhead.json").read_text())
    assert overhead["suite"] == "overhead" and overhead["quick"] is True
    assert {"cores", "cpu_model", "python", "versions"} <= set(overhead["machine"])
    assert overhead["machine"]["versions"]["temporalio"]
    assert overhead["date"]
    for side in ("product_seq", "raw_sdk_seq", "handwritten_seq", "product_conc", "raw_sdk_conc",
                 "handwritten_conc"):
        summary = overhead["results"][side]
        assert {"p50", "p90", "p99", "max"} <= set(summary), side
        assert 0 < summary["p50"] <= summary["p99"] <= summary["max"]
    assert overhead["results"]["product_conc"]["tasks_per_s"] > 0
    assert overhead["ratios"]["sequential_latency_product_vs_raw_sdk"] > 0
    assert set(overhead["per_step_overhead"]) == {"product_ms", "raw_sdk_ms", "extra_ms"}
    # Fixed result keys, so runs can be compared; CPU per task of every process role per side.
    for key in ("sequential_latency_product_vs_raw_sdk", "sequential_latency_product_vs_handwritten",
                "concurrent_throughput_product_vs_handwritten"):
        assert overhead["ratios"][key] > 0, key
    cpu = overhead["cpu_seconds_per_task"]
    assert set(cpu) == {"product", "handwritten", "raw_sdk"}
    for side, roles in cpu.items():
        assert set(roles) == {"worker", "api", "temporal", "postgres", "fake_llm"}, side
        assert roles["worker"] > 0 and roles["temporal"] > 0, (side, roles)
    assert cpu["product"]["api"] > 0 and cpu["handwritten"]["api"] is None

    memory = json.loads((tmp_path / "memory.json").read_text())
    assert memory["suite"] == "memory" and memory["available"] is True, memory.get("error")
    # Searched over HTTP on a real API process, every request answered with 10 hits.
    search = memory["http_search"]["500"]
    assert search["requests"] == 20 and search["index"] == "flat"
    assert 0 < search["p50_ms"] <= search["p99_ms"]
    assert memory["embedding"]["sentences_per_s"] > 0
    assert memory["faiss_vs_pgvector"]["faiss_over_pgvector_qps"] > 0


@pytest.mark.timeout(360)
def test_startup_quick_measures_cold_and_warm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = run_harness(["startup", "--quick", "--results-dir", str(tmp_path)], env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    startup = json.loads((tmp_path / "startup.json").read_text())
    for kind in ("cold", "warm"):
        assert startup["results"][kind]["p50"] > 0
        assert len(startup["results"][kind]["all_s"]) == 1
    assert startup["ratios"]["cold_vs_warm"] > 0
    # The idle stack's memory is reported per process; the API has not loaded torch.
    idle = startup["results"]["idle"]
    assert {"api", "worker", "temporal", "postgres"} <= set(idle["rss_mb"])
    assert 0 < idle["rss_mb"]["api"] < idle["total_rss_mb"]
    assert idle["torch_loaded"]["api"] is False


def test_unknown_suite_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "nope", "--results-dir", str(tmp_path)],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown suite" in proc.stderr
    assert not list(tmp_path.iterdir())
