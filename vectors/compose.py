"""Combining vectors: the llama.cpp steering buffer, layer ranges, and `mix` expressions.

`compose` returns the *whole* buffer llama.cpp expects: (n_layer - 1) * n_embd float32 values,
block 1 first (block il at offset n_embd * (il - 1)). llama.cpp keeps the previous values of any
block past the length it is given, so a buffer that stops early would leave stale steering.

`mix` parses expressions with Python's `ast` and walks a strict whitelist (numbers, names,
+ - * / and parentheses); nothing is ever evaluated as code. Each sub-expression is a linear
form {vector name: coefficient} plus a constant, so nonlinear or meaningless combinations
(vector * vector, 2 + vector, 1 / vector) are refused instead of guessed at. Names in an
expression must be Python identifiers; a vector whose name is not one cannot be mixed.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np

from .vector import SteeringVector, check_range

MAX_EXPRESSION = 500
_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", re.ASCII)


def compose(
    active: Iterable[tuple[SteeringVector, float, tuple[int, int]]], n_layer: int, n_embd: int
) -> np.ndarray:
    """Sum of strength * direction over each vector's range, as the flat llama.cpp buffer.

    Computed in float32 in the order given, exactly as llama.cpp scales and sums control
    vector files, so `/steer` and `--control-vector-scaled` give the same greedy text.
    """
    total = np.zeros((n_layer, n_embd), dtype=np.float32)
    for vec, strength, rng in active:
        if vec.directions.shape != (n_layer, n_embd):
            raise ValueError(
                f"vector '{vec.name}' is {vec.n_layer} blocks x {vec.n_embd} wide, "
                f"the model is {n_layer} x {n_embd}"
            )
        a, b = check_range(rng, n_layer)
        total[a : b + 1] += vec.directions[a : b + 1] * np.float32(strength)
    return np.ascontiguousarray(total[1:].reshape(-1))


def parse_range(text: str, n_layer: int) -> tuple[int, int]:
    """Parse "A-B" or "A" into an inclusive, steerable block range."""
    usage = f"layers must look like A-B with 1 <= A <= B <= {n_layer - 1}, got '{text}'"
    match = _RANGE.fullmatch(text)
    if match is None:
        raise ValueError(usage)
    a = int(match.group(1))
    b = int(match.group(2) or a)
    if not 1 <= a <= b <= n_layer - 1:
        raise ValueError(usage)
    return a, b


def mix(expr: str, vectors: dict[str, SteeringVector], new_name: str) -> SteeringVector:
    """A new vector from a linear combination such as `terse*0.5 - formal`.

    The result's recommended range is the smallest band covering every used input's
    recommended range (a union for overlapping or adjacent ranges); its recommended strength
    is 1.0 because the coefficients already carry the weights.
    """
    coefs = linear_form(expr, vectors)
    used = [vectors[name] for name in coefs]
    _check_compatible(used)
    with np.errstate(over="ignore", invalid="ignore"):
        total = sum(c * vectors[n].directions.astype(np.float64) for n, c in coefs.items())
        directions = total.astype(np.float32)
    if not all(map(math.isfinite, coefs.values())) or not np.isfinite(directions).all():
        raise ValueError(f"mix '{expr}' overflows; use smaller coefficients")
    directions[0] = 0.0
    return SteeringVector(new_name, directions, _mix_meta(expr, coefs, used, directions))


def linear_form(expr: str, vectors: dict[str, SteeringVector]) -> dict[str, float]:
    """The coefficient of each vector in `expr` (zero coefficients kept, order of appearance)."""
    if len(expr) > MAX_EXPRESSION:
        raise ValueError(f"mix expression is longer than {MAX_EXPRESSION} characters")
    unreadable = f"cannot read mix expression '{expr}': use names, numbers, + - * /"
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ValueError(unreadable) from None
    try:
        coefs, const = _Linear(vectors).visit(tree.body)
    except RecursionError:
        raise ValueError(unreadable) from None
    if not coefs:
        raise ValueError(f"mix expression '{expr}' names no vector")
    if const != 0.0:
        raise ValueError(f"mix expression '{expr}' adds a plain number to a vector")
    return coefs


class _Linear(ast.NodeVisitor):
    """Evaluates a whitelisted AST to (coefficients, constant); any other node is refused."""

    def __init__(self, vectors: dict[str, SteeringVector]) -> None:
        self.vectors = vectors

    def generic_visit(self, node: ast.AST) -> tuple[dict[str, float], float]:
        raise ValueError(
            f"mix expressions allow only names, numbers and + - * /, not '{_src(node)}'"
        )

    def visit_Constant(self, node: ast.Constant) -> tuple[dict[str, float], float]:
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            return self.generic_visit(node)
        return {}, float(node.value)

    def visit_Name(self, node: ast.Name) -> tuple[dict[str, float], float]:
        if node.id not in self.vectors:
            known = ", ".join(sorted(self.vectors)) or "none loaded"
            raise ValueError(f"unknown vector '{node.id}' (known: {known})")
        return {node.id: 1.0}, 0.0

    def visit_UnaryOp(self, node: ast.UnaryOp) -> tuple[dict[str, float], float]:
        coefs, const = self.visit(node.operand)
        if isinstance(node.op, ast.USub):
            return _scale(coefs, const, -1.0)
        if isinstance(node.op, ast.UAdd):
            return coefs, const
        return self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> tuple[dict[str, float], float]:
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, (ast.Add, ast.Sub)):
            sign = 1.0 if isinstance(node.op, ast.Add) else -1.0
            return _add(left, _scale(*right, sign))
        if isinstance(node.op, ast.Mult):
            return _multiply(left, right, node)
        if isinstance(node.op, ast.Div):
            return _divide(left, right, node)
        return self.generic_visit(node)


def _scale(coefs: dict[str, float], const: float, k: float) -> tuple[dict[str, float], float]:
    return {n: c * k for n, c in coefs.items()}, const * k


def _add(left: tuple, right: tuple) -> tuple[dict[str, float], float]:
    coefs = dict(left[0])
    for name, c in right[0].items():
        coefs[name] = coefs.get(name, 0.0) + c
    return coefs, left[1] + right[1]


def _multiply(left: tuple, right: tuple, node: ast.AST) -> tuple[dict[str, float], float]:
    if left[0] and right[0]:
        raise ValueError(f"cannot multiply two vectors in '{_src(node)}'")
    return _scale(*left, right[1]) if not right[0] else _scale(*right, left[1])


def _divide(left: tuple, right: tuple, node: ast.AST) -> tuple[dict[str, float], float]:
    if right[0]:
        raise ValueError(f"cannot divide by a vector in '{_src(node)}'")
    if right[1] == 0:
        raise ValueError(f"division by zero in '{_src(node)}'")
    return _scale(*left, 1.0 / right[1])


def _src(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # unparse is only for the message; never let it mask the real error
        return type(node).__name__


def _check_compatible(used: list[SteeringVector]) -> None:
    first = used[0]
    for vec in used[1:]:
        if vec.directions.shape != first.directions.shape:
            raise ValueError(
                f"cannot mix '{first.name}' ({first.n_layer}x{first.n_embd}) with "
                f"'{vec.name}' ({vec.n_layer}x{vec.n_embd}): made for different models"
            )
        if vec.strength_unit != first.strength_unit:
            raise ValueError(
                f"cannot mix '{first.name}' (unit {first.strength_unit}) with '{vec.name}' "
                f"(unit {vec.strength_unit}): their strengths mean different things"
            )


def _covering_range(used: list[SteeringVector]) -> list[int] | None:
    ranges = [v.recommended_range for v in used if v.recommended_range is not None]
    if not ranges:
        return None
    return [min(a for a, _ in ranges), max(b for _, b in ranges)]


def _mix_meta(
    expr: str, coefs: dict[str, float], used: list[SteeringVector], directions: np.ndarray
) -> dict:
    return {
        "method": "mix",
        "expression": expr,
        "sources": dict(coefs),
        "strength_unit": used[0].strength_unit,
        "recommended_range": _covering_range(used),
        "recommended_strength": 1.0,
        "norms": np.linalg.norm(directions.astype(np.float64), axis=1).tolist(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
