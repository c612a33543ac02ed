"""The embedding model in bfloat16 finds what float32 finds (the real model, from the wheel)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from durable_orchestrator.settings import Settings
from memory.embedder import (
    Embedder,
    cpu_flags_say_bfloat16,
    default_model_path,
    native_bfloat16,
    resolve_dtype,
    resolve_variant,
)

TEXTS = [
    f"{subject} {about}"
    for subject in ("Quarterly revenue report for", "Travel itinerary to", "Bug in the login page of",
                    "Recipe for dinner with", "Meeting notes about", "Research summary on")
    for about in ("Acme Corp", "Lisbon in May", "the mobile app", "mushrooms and rice", "hiring plans",
                  "battery chemistry")
]


async def test_bfloat16_vectors_agree_with_float32_and_rank_neighbours_alike() -> None:
    exact = await Embedder(dtype="float32").encode(TEXTS)
    half = await Embedder(dtype="bfloat16").encode(TEXTS)
    assert half.dtype == np.float32
    assert np.allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-5)  # unit rows: inner product == cosine
    assert float((exact * half).sum(axis=1).min()) > 0.999
    # The nearest other text by bfloat16 is, by float32, the nearest or within a hair of it (two
    # texts that share a subject can tie), and 9 of each text's 10 nearest are the same.
    similar = exact @ exact.T
    by_exact, by_half = np.argsort(-similar, axis=1), np.argsort(-(half @ half.T), axis=1)
    rows = np.arange(len(TEXTS))
    assert (similar[rows, by_half[:, 1]] >= similar[rows, by_exact[:, 1]] - 0.002).all()
    recall = np.mean([len(set(e[1:11]) & set(h[1:11])) / 10 for e, h in zip(by_exact, by_half, strict=True)])
    assert recall >= 0.9


def test_auto_takes_bfloat16_only_where_the_cpu_has_it() -> None:
    assert resolve_dtype("auto") == ("bfloat16" if native_bfloat16() else "float32")
    assert resolve_dtype("float32") == "float32"
    with pytest.raises(ValueError):
        resolve_dtype("float16")
    with pytest.raises(ValidationError):
        Settings(embedding_dtype="int8")


def test_auto_backend_is_torch_in_bfloat16_where_native_else_onnx() -> None:
    """The torch-free probe (CPU flags) agrees with torch's own."""
    assert cpu_flags_say_bfloat16() == native_bfloat16()
    path = default_model_path()
    assert resolve_variant("auto", "auto", path) == ("bfloat16" if native_bfloat16() else "onnx")
    assert resolve_variant("auto", "bfloat16", path) == "bfloat16"
    assert resolve_variant("auto", "float32", path) == "onnx"
    assert resolve_variant("torch", "float32", path) == "float32"
    assert resolve_variant("onnx", "auto", path) == "onnx"
    # The API's one-query-at-a-time embedding takes ONNX Runtime wherever it can run.
    assert resolve_variant("auto", "auto", path, short_texts=True) == "onnx"
    assert resolve_variant("torch", "auto", path, short_texts=True) == resolve_dtype("auto")


async def test_an_embedder_sees_the_model_another_one_loaded() -> None:
    """The API's memory service waits for the model the worker's (in the same process) loads."""
    loader, waiter = Embedder(), Embedder()
    await loader.warm()
    assert waiter.loaded
    assert not Embedder("/nowhere/model").loaded


def test_on_a_bfloat16_cpu_the_worker_takes_torch_and_the_api_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `auto` decides where the CPU flags say bfloat16 (this machine may not have it)."""
    import memory.embedder as embedder

    monkeypatch.setattr(embedder, "cpu_flags_say_bfloat16", lambda: True)
    monkeypatch.setattr(embedder, "native_bfloat16", lambda: True)
    path = default_model_path()
    assert embedder.resolve_variant("auto", "auto", path) == "bfloat16"
    assert embedder.resolve_variant("auto", "auto", path, short_texts=True) == "onnx"
    assert embedder.resolve_variant("auto", "float32", path) == "onnx"
