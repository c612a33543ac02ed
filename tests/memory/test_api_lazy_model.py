"""The API process starts without the embedding model and loads it on its first memory request
that embeds, on ONNX Runtime and without torch once the model's export exists: a real uvicorn
process over real PostgreSQL and Temporal, its memory maps read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from durable_orchestrator.auth.api_keys import create_key
from durable_orchestrator.devstack import TemporalDevServer, free_port, stop_process, wait_http
from fake_openai import FakeOpenAI
from memory import onnx_model
from memory.embedder import default_model_path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _mapped(pid: int, library: str) -> bool:
    return any(library in m.path for m in psutil.Process(pid).memory_maps(grouped=True))


@pytest.fixture
def api_process(
    pg_url: str, temporal_server: TemporalDevServer, fake_llm: FakeOpenAI, tmp_path: Path
) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of `uvicorn api.main:app` with the shipped defaults, once /healthz answers,
    with the model's export in the cache (as after the worker's, or the image's, first load)."""
    onnx_model.load(default_model_path(), onnx_model.default_cache_dir(), threads=1)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": pg_url,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "OPENAI_BASE_URL": fake_llm.base_url,
        "OPENAI_API_KEY": "test-key",
        "ORCH_DATA_DIR": str(tmp_path),
    }
    env.pop("ORCH_API_PRELOAD_EMBEDDING_MODEL", None)
    with (tmp_path / "api.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/healthz", proc, 120)
            yield url, proc.pid
        finally:
            stop_process(proc, 30)


@pytest.mark.timeout(300)
async def test_api_loads_the_model_on_first_memory_use_only(
    api_process: tuple[str, int], engine: AsyncEngine
) -> None:
    url, pid = api_process
    key, _ = await create_key(engine, "lazy-model-user")
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=240) as http:
        # Task requests, and a search with nothing to search, never need the model.
        resp = await http.get("/tasks")
        assert resp.status_code == 200, resp.text
        resp = await http.post("/memory/search", json={"query": "what did we learn about tea"})
        assert resp.status_code == 200 and resp.json()["results"] == [], resp.text
        assert not _mapped(pid, "libonnxruntime") and not _mapped(pid, "libtorch")

        resp = await http.post("/memory", json={"text": "Green tea is best brewed at 80 degrees."})
        assert resp.status_code == 201, resp.text
        assert _mapped(pid, "libonnxruntime") and not _mapped(pid, "libtorch")
        resp = await http.post("/memory/search", json={"query": "how hot should tea water be"})
        assert resp.status_code == 200, resp.text
        assert [r["text"] for r in resp.json()["results"]] == [
            "Green tea is best brewed at 80 degrees."
        ]
