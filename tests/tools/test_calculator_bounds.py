"""Hostile calculator input: refused before it is computed, so no expression costs more than
100 ms of CPU or 10 MB, and the evaluation never runs on the event loop's thread."""

from __future__ import annotations

import threading
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable_orchestrator.settings import Settings
from durable_orchestrator.tools import ToolContext, ToolError
from durable_orchestrator.tools import calculator as calc

CPU_LIMIT_SECS = 0.1
MEMORY_LIMIT_BYTES = 10 * 1024 * 1024


def cost_of(expression: str) -> tuple[object, float, int]:
    """(result or the ToolError, CPU seconds of this thread, peak bytes allocated)."""
    tracemalloc.start()
    started = time.thread_time()
    try:
        outcome: object = calc.evaluate(expression)
    except ToolError as exc:
        outcome = exc
    cpu = time.thread_time() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return outcome, cpu, peak


HOSTILE = [
    "((9**1000)**1000)**1000",  # the exponent is small at every level; the base is not
    "9**9**9**9",
    "(10**300)**(10**300)",
    "2**(2**9000)",
    "2**10000 * 2**10000",
    "(9**999)*(9**999)*(9**999)*(9**999)",
    "max(9**999, 8)**999",
    "abs(-9**999)**99",
    "(-(9**999))**99",
    "round(1, -10**9)",
    "floor(1e308)**100",
    "(2**5000 + 2**5000)**3",
]


@pytest.mark.parametrize("expression", HOSTILE)
def test_hostile_expressions_are_refused_within_the_cost_bound(expression: str) -> None:
    outcome, cpu, peak = cost_of(expression)
    assert isinstance(outcome, ToolError), outcome
    assert "limit" in str(outcome)
    assert cpu < CPU_LIMIT_SECS, f"{expression}: {cpu * 1000:.1f} ms of CPU"
    assert peak < MEMORY_LIMIT_BYTES, f"{expression}: {peak:,} bytes"


@pytest.mark.parametrize(
    "expression, value",
    [
        ("2**1000 % 7", pow(2, 1000, 7)),
        ("10**3000 // 10**2999", 10),
        ("1**(10**3000)", 1),
        ("(-1)**(2**9000)", 1),
        ("2**-2", 0.25),
        ("round(123456, -2)", 123500),
    ],
)
def test_large_but_bounded_results_still_compute(expression: str, value: object) -> None:
    assert calc.evaluate(expression) == value


def test_a_result_at_the_limit_is_printable() -> None:
    assert len(str(calc.evaluate(f"2**{calc.MAX_RESULT_BITS - 1}"))) > 3000


_atoms = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from(["9**999", "2**9999", "pi", "1e308", "0.5", "7"]),
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(
        children, st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]), children
    ).map(lambda t: f"({t[0]}){t[1]}({t[2]})")
    calls = st.tuples(
        st.sampled_from(["abs", "floor", "sqrt", "log", "max", "round"]), children
    ).map(lambda t: f"{t[0]}({t[1]})" if t[0] != "max" else f"max({t[1]}, 2)")
    return st.one_of(binary, calls, children.map(lambda c: f"-({c})"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(_atoms, _combine, max_leaves=12).filter(lambda s: len(s) <= 500))
def test_no_expression_exceeds_the_cost_bound(expression: str) -> None:
    outcome, cpu, peak = cost_of(expression)
    assert cpu < CPU_LIMIT_SECS, f"{expression}: {cpu * 1000:.1f} ms of CPU"
    assert peak < MEMORY_LIMIT_BYTES, f"{expression}: {peak:,} bytes"
    if not isinstance(outcome, ToolError):
        str(outcome)  # the tool's answer is the printed value: printing must work too


async def test_the_tool_evaluates_off_the_event_loop_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []
    real = calc.evaluate

    def spy(expression: str) -> float | int:
        seen.append(threading.get_ident())
        return real(expression)

    monkeypatch.setattr(calc, "evaluate", spy)
    ctx = ToolContext(task_id="t", user_id="u", step_index=0, settings=Settings())
    assert await calc.calculator(calc.CalculatorArgs(expression="6*7"), ctx) == "42"
    assert seen and seen[0] != threading.get_ident()
