"""USD per 1M tokens by model. Unknown models cost 0 and are flagged as unpriced in the ledger."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

PRICES_FILE = Path(__file__).with_name("prices.json")


@lru_cache
def price_table() -> dict[str, tuple[Decimal, Decimal]]:
    raw = json.loads(PRICES_FILE.read_text())
    return {m: (Decimal(str(p["prompt"])), Decimal(str(p["completion"]))) for m, p in raw.items()}


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> tuple[Decimal, bool]:
    """(cost, priced). Provider-prefixed names ("openai/gpt-4o") match their base name."""
    table = price_table()
    price = table.get(model) or table.get(model.rsplit("/", 1)[-1])
    if price is None:
        return Decimal(0), False
    per_prompt, per_completion = price
    cost = (per_prompt * prompt_tokens + per_completion * completion_tokens) / Decimal(1_000_000)
    return cost.quantize(Decimal("0.00000001")), True
