"""Synthetic memories for the memory benchmarks: clustered 384-d unit vectors and short texts."""

from __future__ import annotations

import numpy as np

#: all-MiniLM-L6-v2's dimension, the product's embedding model.
DIM = 384

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
