"""The `calculator` tool: arithmetic on a whitelist of syntax, never `eval`.

Sizes are checked before an operation runs, so `9**9**9` is refused at once
instead of being computed for minutes.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from consumers.tools.errors import ToolError
from consumers.tools.registry import tool

MAX_CHARS = 500
MAX_NODES = 200
MAX_INT_BITS = 4096  # about 1,233 decimal digits
BIG_INT = 2**63  # past it the result is sent as a string: JSON readers lose bigger ints

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//"}
_SYMBOL |= {ast.Mod: "%", ast.Pow: "**"}

_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "min": min,
    "max": max,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _bits(value: Number) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _check_size(op: type[ast.operator], left: Number, right: Number) -> None:
    """Refuse an integer operation whose result would pass MAX_INT_BITS, before doing it."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    estimate: float
    if op is ast.Mult:
        estimate = _bits(left) + _bits(right)
    elif op is ast.Pow:
        if right < 0 or abs(left) <= 1:
            return
        estimate = right * math.log2(abs(left))
    else:
        return
    if estimate > MAX_INT_BITS:
        raise ToolError(
            f"{left} {_SYMBOL[op]} {right} is too large to compute (more than {MAX_INT_BITS} bits)"
            if _bits(left) < 64 and _bits(right) < 64
            else f"a {_SYMBOL[op]} of numbers this large is too large to compute "
            f"(more than {MAX_INT_BITS} bits)"
        )


def _finite(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"the result {value!r} is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is too large (or not a number)")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(f"the result is too large (more than {MAX_INT_BITS} bits)")
    return value


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"{node.value!r} is not a number")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _evaluate(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        _check_size(type(node.op), left, right)
        try:
            return _finite(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("the result is too large") from None
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r} (constants: {', '.join(_CONSTANTS)})")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise ToolError(
                "only these functions can be called, with plain arguments: " + ", ".join(_FUNCTIONS)
            )
        function = _FUNCTIONS.get(node.func.id)
        if function is None:
            raise ToolError(
                f"unknown function {node.func.id!r} (functions: {', '.join(_FUNCTIONS)})"
            )
        arguments = [_evaluate(argument) for argument in node.args]
        try:
            return _finite(function(*arguments))
        except (ValueError, TypeError, OverflowError) as exc:
            raise ToolError(f"{node.func.id}: {exc}") from None
    raise ToolError(
        f"{type(node).__name__} is not allowed: use numbers, + - * / // % **, "
        "parentheses and the functions " + ", ".join(_FUNCTIONS)
    )


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; anything else is a ToolError saying why."""
    if len(expression) > MAX_CHARS:
        raise ToolError(f"the expression is longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"the expression has more than {MAX_NODES} parts")
    return _evaluate(tree)


@tool
def calculator(
    expression: Annotated[
        str, Field(description="e.g. '(2 + 3) * 4 / 7' or 'sqrt(2) * pi'", max_length=MAX_CHARS)
    ],
) -> int | float | str:
    """Evaluate an arithmetic expression exactly: numbers, + - * / // % **, parentheses,
    pi, e, tau and sqrt, exp, log, log2, log10, sin, cos, tan, asin, acos, atan, abs,
    round, floor, ceil, min, max. Integers past 2**63 come back as a decimal string."""
    value = evaluate(expression)
    if isinstance(value, int) and abs(value) >= BIG_INT:
        return str(value)
    return value
