"""calculator: arithmetic on numbers, evaluated by walking the AST (never eval).

Hostile input is bounded before any arithmetic runs: every integer operation first bounds the
bit length of its result from its operands (a product has at most the sum of their bit
lengths, a power at most exponent times log2 of the base, ...), and refuses when that bound exceeds
MAX_RESULT_BITS. A single big-integer operation is one C call that holds the GIL for as long
as it takes, so running it in a thread could not keep the worker responsive; the bound is
what does. With it the worst expression costs well under a millisecond and a few kB, and the
evaluation still runs in a thread so the event loop (heartbeats, other activities) never
waits for it."""

from __future__ import annotations

import ast
import asyncio
import math
import operator
from typing import Any

from pydantic import BaseModel, Field

from durable_orchestrator.tools.registry import REGISTRY, ToolContext, ToolError, tool

# About 3 000 decimal digits: below Python's 4 300-digit limit on int -> str, and every
# operation on numbers this size takes microseconds.
MAX_RESULT_BITS = 10_000
MAX_NODES = 200
MAX_ROUND_DIGITS = 400  # round(x, -n) computes 10**n

_BINARY: dict[type[ast.operator], Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Any] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Any] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTS = {"pi": math.pi, "e": math.e}


def _too_big(bits: int) -> ToolError:
    return ToolError(
        f"result too large: it would have about {bits:,} bits, more than the calculator's "
        f"limit of {MAX_RESULT_BITS:,} bits (about 3 000 digits)"
    )


def _result_bits(op: ast.operator, left: Any, right: Any) -> int:
    """An upper bound of the result's bit length when both operands are integers; 0 when the
    operation is float arithmetic (constant time, overflow raises at once)."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return 0
    a, b = abs(left).bit_length(), abs(right).bit_length()
    if isinstance(op, ast.Add | ast.Sub):
        return max(a, b) + 1
    if isinstance(op, ast.Mult):
        return a + b
    if isinstance(op, ast.Pow):
        if right < 0 or abs(left) <= 1:
            return 1  # a float, or 0 / 1 / -1 whatever the exponent
        if right > MAX_RESULT_BITS:
            return right  # |left| >= 2: at least `right` bits
        # math.log2 is exact enough for a bound and, unlike bit_length, tight for 10**n
        return int(math.log2(abs(left)) * right) + 1
    return a  # // % and / never grow past the dividend


def evaluate(expression: str) -> float | int:
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ToolError("not an arithmetic expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"expression too long (more than {MAX_NODES} parts)")

    def checked(value: Any) -> Any:
        if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
            raise _too_big(value.bit_length())
        return value

    def call(name: str, args: list[Any]) -> Any:
        if name == "round" and len(args) == 2:
            digits = args[1]
            if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
                raise ToolError(
                    f"round() digits must be a whole number within the limit of ±{MAX_ROUND_DIGITS}"
                )
        return _FUNCS[name](*args)

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return checked(node.value)
        if isinstance(node, ast.Name) and node.id in _CONSTS:
            return _CONSTS[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = ev(node.left), ev(node.right)
            bits = _result_bits(node.op, left, right)
            if bits > MAX_RESULT_BITS:
                raise _too_big(bits)
            return checked(_BINARY[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and not node.keywords
        ):
            return checked(call(node.func.id, [ev(a) for a in node.args]))
        raise ToolError(f"unsupported element in expression: {ast.dump(node)[:60]}")

    try:
        return ev(tree)
    except ToolError:
        raise
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ToolError(f"cannot evaluate: {exc}") from None


class CalculatorArgs(BaseModel):
    expression: str = Field(
        min_length=1,
        max_length=500,
        description="Arithmetic expression, e.g. '(2+3)*4', 'sqrt(2)', '2**10 / 3'.",
    )


@tool(
    REGISTRY,
    name="calculator",
    description="Evaluate an arithmetic expression (+ - * / // % **, sqrt, log, sin, pi, ...).",
    args=CalculatorArgs,
    timeout_secs=5.0,
)
async def calculator(args: CalculatorArgs, ctx: ToolContext) -> str:
    return str(await asyncio.to_thread(evaluate, args.expression))
