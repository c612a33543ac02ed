"""Embedder.encode_one's micro-batch: concurrent single texts are encoded together, in one
forward pass, with the same vectors as one by one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from memory.embedder import Embedder

QUERIES = [
    "how did sales change last quarter",
    "tea exports",
    "What is the best way to replace a bicycle chain on a mountain bike after 3000 km?",
    "arctic tern migration",
    "Beethoven",
    "Python exception groups and TaskGroup in 3.11",
]


def _recording(embedder: Embedder) -> list[int]:
    """Make the embedder record each encode's batch size."""
    sizes: list[int] = []
    real = embedder.encode_sync

    def encode_sync(texts: Sequence[str]) -> np.ndarray:
        sizes.append(len(texts))
        return real(texts)

    embedder.encode_sync = encode_sync  # type: ignore[method-assign]
    return sizes


def _fake(embedder: Embedder, release: threading.Event, started: threading.Event) -> list[list[str]]:
    """No model: a text's vector is made from its length; an encode says it `started`, then
    waits for `release`."""
    batches: list[list[str]] = []

    def encode_sync(texts: Sequence[str]) -> np.ndarray:
        batches.append(list(texts))
        started.set()
        release.wait(10)
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)

    embedder.encode_sync = encode_sync  # type: ignore[method-assign]
    return batches


async def test_concurrent_queries_are_one_encode_with_the_same_vectors() -> None:
    one_by_one = Embedder()
    alone = [await one_by_one.encode_one(q) for q in QUERIES]

    together = Embedder()
    sizes = _recording(together)
    vecs = await asyncio.gather(*(together.encode_one(q) for q in QUERIES))
    assert sizes == [len(QUERIES)]
    for a, b in zip(alone, vecs, strict=True):
        assert b.shape == a.shape == (384,)
        # The same vector up to rounding: in bfloat16 a batch's padded shape changes the last bits.
        assert float(a @ b) > 0.9999


async def test_texts_arriving_during_an_encode_go_together_into_the_next() -> None:
    release, started = threading.Event(), threading.Event()
    embedder = Embedder("unused")
    batches = _fake(embedder, release, started)
    first = asyncio.ensure_future(embedder.encode_one("a"))
    assert await asyncio.to_thread(started.wait, 10)  # the first encode is running (in its thread)
    later = [asyncio.ensure_future(embedder.encode_one(t)) for t in ("bb", "ccc", "dddd")]
    await asyncio.sleep(0.05)
    assert batches == [["a"]]  # the others wait for the running encode
    release.set()
    assert (await first).tolist() == [1.0, 1.0]
    assert [(await f).tolist() for f in later] == [[2.0, 1.0], [3.0, 1.0], [4.0, 1.0]]
    assert batches == [["a"], ["bb", "ccc", "dddd"]]


async def test_a_failed_encode_fails_its_askers_and_the_next_batch_still_runs() -> None:
    embedder = Embedder("unused")
    calls: list[list[str]] = []

    def encode_sync(texts: Sequence[str]) -> np.ndarray:
        calls.append(list(texts))
        if len(calls) == 1:
            raise RuntimeError("torch fell over")
        return np.ones((len(texts), 2), dtype=np.float32)

    embedder.encode_sync = encode_sync  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="torch fell over"):
        await asyncio.gather(embedder.encode_one("x"), embedder.encode_one("y"))
    assert (await embedder.encode_one("z")).tolist() == [1.0, 1.0]
    assert calls == [["x", "y"], ["z"]]


async def test_a_cancelled_asker_is_left_out() -> None:
    release, started = threading.Event(), threading.Event()
    embedder = Embedder("unused")
    batches = _fake(embedder, release, started)
    first = asyncio.ensure_future(embedder.encode_one("a"))
    assert await asyncio.to_thread(started.wait, 10)
    gone = asyncio.ensure_future(embedder.encode_one("gone"))
    kept = asyncio.ensure_future(embedder.encode_one("kept"))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    await first
    assert (await kept).tolist() == [4.0, 1.0]
    assert gone.cancelled()
    assert batches == [["a"], ["kept"]]
