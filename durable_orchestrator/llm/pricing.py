"""What an LLM call costs in USD, from the `genai-prices` library (a maintained, offline snapshot
of provider price lists) and an optional file of operator overrides (`ORCH_PRICES_FILE`).

Providers answer with other names than the one asked for: OpenAI returns snapshot names
(`gpt-4o-mini-2024-07-18`), gateways put a provider in front (`openai/gpt-4o`). A call is priced
by the model that answered and, if that name is unknown, by the model that was requested; each
name is tried as given, without its provider prefix and without its snapshot date.

The overrides file is JSON, USD per million tokens:
`{"my-finetune": {"prompt": 0.3, "completion": 1.2}}`. An override wins over the library, so an
operator with negotiated prices (or a self-hosted model) states them there."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from functools import lru_cache
from pathlib import Path

from genai_prices import Usage, calc_price

_MILLION = Decimal(1_000_000)
_QUANTUM = Decimal("0.00000001")  # the ledger's Numeric(18, 8)
# -2024-07-18, -20240718, -0613 (OpenAI's older snapshot style), -latest
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")


def candidate_names(model: str) -> list[str]:
    """The names a model is looked up by, most specific first."""
    names = [model]
    base = model.rsplit("/", 1)[-1]
    names.append(base)
    names.append(_SNAPSHOT.sub("", base))
    return list(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True)
class UnitPrice:
    """How a model is priced: an override (USD per million tokens) or the library's entry
    (looked up per call, since some models' prices depend on the prompt size)."""

    matched: str
    prompt: Decimal | None = None
    completion: Decimal | None = None
    provider_id: str | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        if self.prompt is not None and self.completion is not None:
            total = (self.prompt * prompt_tokens + self.completion * completion_tokens) / _MILLION
        else:
            usage = Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens)
            total = Decimal(
                calc_price(usage, self.matched, provider_id=self.provider_id).total_price
            )
        return total.quantize(_QUANTUM, rounding=ROUND_CEILING)


@dataclass(frozen=True)
class PricedCall:
    cost: Decimal
    priced: bool
    priced_as: str | None  # the name whose price was used; None when unpriced


class PriceFileError(ValueError):
    pass


def _load_overrides(path: Path | None) -> dict[str, UnitPrice]:
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
        return {
            name: UnitPrice(name, Decimal(str(p["prompt"])), Decimal(str(p["completion"])))
            for name, p in raw.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PriceFileError(
            f"ORCH_PRICES_FILE {path}: expected a JSON object "
            f'{{"<model>": {{"prompt": <USD/1M>, "completion": <USD/1M>}}}} ({exc})'
        ) from exc


def _library_price(name: str) -> UnitPrice | None:
    provider = name.split("/", 1)[0] if "/" in name else None
    ref = name.rsplit("/", 1)[-1]
    for provider_id in dict.fromkeys([provider, None]):
        try:
            calc = calc_price(Usage(input_tokens=1, output_tokens=1), ref, provider_id=provider_id)
        except LookupError:
            continue
        return UnitPrice(calc.model.id, provider_id=calc.provider.id)
    return None


class Prices:
    """Price lookups with the operator's overrides first; lookups are cached per name."""

    def __init__(self, overrides: dict[str, UnitPrice] | None = None) -> None:
        self.overrides = overrides or {}
        self._cache: dict[str, UnitPrice | None] = {}

    def unit_price(self, model: str) -> UnitPrice | None:
        if model not in self._cache:
            self._cache[model] = self._lookup(model)
        return self._cache[model]

    def _lookup(self, model: str) -> UnitPrice | None:
        names = candidate_names(model)
        for name in names:
            if name in self.overrides:
                return self.overrides[name]
        for name in names:
            found = _library_price(name)
            if found is not None:
                return found
        return None

    def price(
        self, answered: str, requested: str | None, prompt_tokens: int, completion_tokens: int
    ) -> PricedCall:
        for model in dict.fromkeys(m for m in (answered, requested) if m):
            unit = self.unit_price(model)
            if unit is not None:
                return PricedCall(unit.cost(prompt_tokens, completion_tokens), True, unit.matched)
        return PricedCall(Decimal(0), False, None)


# The offline provider (llm/offline.py) answers as "offline" and costs nothing; without this
# its answers would be priced as the model requested.
_BUILT_IN = {"offline": UnitPrice("offline", Decimal(0), Decimal(0))}


@lru_cache
def prices(overrides_file: Path | None = None) -> Prices:
    """One Prices per overrides file (a process reads its file once)."""
    return Prices({**_BUILT_IN, **_load_overrides(overrides_file)})


def cost_usd(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    requested: str | None = None,
    overrides_file: Path | None = None,
) -> tuple[Decimal, bool]:
    """(cost, priced)."""
    priced = prices(overrides_file).price(model, requested, prompt_tokens, completion_tokens)
    return priced.cost, priced.priced
