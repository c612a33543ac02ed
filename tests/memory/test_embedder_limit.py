"""How much of a text the embedding model reads: `ORCH_EMBEDDING_MAX_TOKENS` word pieces, the
rest is cut (the real model, loaded from the wheel)."""

from __future__ import annotations

import numpy as np

from durable_orchestrator.settings import Settings
from memory.embedder import Embedder

# About 150 word pieces: past the default limit (128), within the model's own (256).
HEAD = "the cat sat on the mat " * 25


async def test_texts_alike_in_their_first_128_word_pieces_embed_alike() -> None:
    about_tea, about_bikes = HEAD + "and then we talked about green tea", HEAD + "bicycle chains rust"
    capped = Embedder(max_tokens=Settings().embedding_max_tokens)
    own = Embedder(max_tokens=0)
    tea, bikes = await capped.encode([about_tea, about_bikes])
    assert np.allclose(tea, bikes, atol=1e-6)
    # With the model's own limit the endings count, and the two differ.
    tea, bikes = await own.encode([about_tea, about_bikes])
    assert float(tea @ bikes) < 0.999
    # A text within the limit is embedded the same either way.
    short = "arctic tern migration"
    assert np.allclose((await capped.encode([short]))[0], (await own.encode([short]))[0], atol=1e-5)
