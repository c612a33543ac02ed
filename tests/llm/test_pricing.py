"""Prices from genai-prices (offline) with operator overrides; prompt tokens from the model's
own tokenizer; task budgets merged with the operator's caps. No services needed."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import bpe_openai
import pytest
from genai_prices import Usage, calc_price

from durable_orchestrator.llm.budget import BudgetAboveCap, effective_task_budget, worst_case
from durable_orchestrator.llm.pricing import PriceFileError, Prices, prices
from durable_orchestrator.llm.token_estimate import count_prompt_tokens, encoding_name
from durable_orchestrator.settings import Settings


def test_snapshot_and_prefixed_names_cost_what_the_base_model_costs() -> None:
    table = prices()
    expected = Decimal(
        calc_price(Usage(input_tokens=1200, output_tokens=300), "gpt-4o-mini").total_price
    )
    assert expected > 0
    for name in ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"):
        priced = table.price(name, None, 1200, 300)
        assert priced.priced and priced.priced_as == "gpt-4o-mini", name
        assert priced.cost == expected.quantize(Decimal("0.00000001"))
    # Dearer model, dearer call: the snapshot is not priced as some other family member.
    assert table.price("gpt-4o-2024-08-06", None, 1200, 300).cost > expected


def test_an_unknown_answer_is_priced_by_the_model_requested() -> None:
    table = prices()
    assert not table.price("acme-7b", None, 100, 100).priced
    by_request = table.price("acme-7b-q4", "gpt-4o-mini", 100, 100)
    assert by_request.priced and by_request.priced_as == "gpt-4o-mini" and by_request.cost > 0
    # The offline provider's answers are free, whatever model was asked for.
    offline = table.price("offline", "gpt-4o-mini", 100, 100)
    assert offline.priced and offline.cost == 0


def test_operator_overrides_win_and_extend(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "acme-7b": {"prompt": 1, "completion": 2},
                "gpt-4o-mini": {"prompt": 0, "completion": 0},
            }
        )
    )
    table = prices(path)
    assert table.price("openai/acme-7b-2025-01-01", None, 1_000_000, 500_000).cost == Decimal(2)
    assert table.price("gpt-4o-mini-2024-07-18", None, 1000, 1000).cost == 0  # negotiated: free
    broken = tmp_path / "broken.json"
    broken.write_text('{"x": {"prompt": 1}}')
    with pytest.raises(PriceFileError, match="ORCH_PRICES_FILE"):
        prices(broken)


def test_prompt_tokens_come_from_the_model_tokenizer() -> None:
    messages = [
        {"role": "system", "content": "You plan."},
        {"role": "user", "content": "日本語のテキスト " * 50},
    ]
    assert encoding_name("gpt-4o-mini-2024-07-18") == encoding_name("openai/gpt-4o") == "o200k_base"
    assert encoding_name("gpt-3.5-turbo") == "cl100k_base"
    counted = count_prompt_tokens("gpt-4o-mini", messages)
    text_tokens = sum(
        len(bpe_openai.get_encoding("o200k_base").encode(m["content"])) for m in messages
    )
    assert text_tokens < counted <= text_tokens + 20  # the text plus the messages' framing
    # Unknown tokenizer: never fewer than the real count of a comparable one.
    assert count_prompt_tokens("acme-7b", messages) >= counted


def test_worst_case_takes_the_dearest_model_of_the_fallback_chain() -> None:
    messages = [{"role": "user", "content": "hello"}]
    cheap = worst_case(Settings(model="gpt-4o-mini"), "gpt-4o-mini", messages, 100)
    chained = worst_case(
        Settings(model="gpt-4o-mini", model_fallbacks=["gpt-4o"]), "gpt-4o-mini", messages, 100
    )
    assert cheap.unpriced == chained.unpriced == ()
    assert chained.cost > cheap.cost > 0
    unknown = worst_case(Settings(model_fallbacks=["acme-7b"]), "gpt-4o-mini", messages, 100)
    assert unknown.unpriced == ("acme-7b",)


def test_a_partial_budget_keeps_the_operator_caps_and_cannot_raise_them() -> None:
    settings = Settings(default_task_max_tokens=5000, default_task_max_cost_usd=1.0)
    assert effective_task_budget(None, settings) == {"max_tokens": 5000, "max_cost_usd": 1.0}
    assert effective_task_budget({}, settings) == {"max_tokens": 5000, "max_cost_usd": 1.0}
    assert effective_task_budget({"max_cost_usd": 0.5, "max_tokens": None}, settings) == {
        "max_tokens": 5000,
        "max_cost_usd": 0.5,
    }
    with pytest.raises(BudgetAboveCap, match="ORCH_DEFAULT_TASK_MAX_TOKENS") as err:
        effective_task_budget({"max_tokens": 5001}, settings)
    assert err.value.field == "max_tokens"
    # Without an operator cap a client may set any budget.
    assert effective_task_budget({"max_tokens": 10**9}, Settings())["max_tokens"] == 10**9


def test_prices_for_an_empty_override_table_are_the_library_s() -> None:
    assert Prices().price("o4-mini", None, 10, 10) == prices().price("o4-mini", None, 10, 10)
