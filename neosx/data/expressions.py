"""The feature expression language: restricted Python evaluated on awkward arrays.

An expression is one Python expression built from names (branches, columns, collections),
numbers, attribute access (``Muon.pt``), subscripts and slices (``Jet[Jet.pt > 30]``),
arithmetic (``+ - * / // % **``), comparisons, ``&``, ``|``, ``~`` and calls of the
functions in :data:`FUNCTIONS` (math and the object functions of
:mod:`neosx.data.objects`). It is parsed with :mod:`ast` and evaluated node by node; no
other Python is run. ``and``/``or``/``not`` do not act element-wise and are rejected: use
``&``, ``|``, ``~`` and parenthesise comparisons, ``(Jet.pt > 30) & Jet.ID``.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import awkward as ak
import numpy as np

from neosx.data import objects

__all__ = ["FUNCTIONS", "Expression", "ExpressionError", "evaluate", "parse"]


class ExpressionError(ValueError):
    """An expression that is not valid in the language (raised before any data is read)."""


class Expression(NamedTuple):
    """A parsed, validated expression.

    Attributes:
        text: The source text.
        tree: Its syntax tree.
        names: The names it reads (branches, columns or collections), not function names.
        fields: Attribute names it uses plus fields its functions read: the collection
            fields to load.
    """

    text: str
    tree: ast.Expression
    names: frozenset[str]
    fields: frozenset[str]


_MATH = {
    name: objects.Function(getattr(np, name))
    for name in (
        "sqrt",
        "abs",
        "log",
        "exp",
        "cos",
        "sin",
        "tan",
        "arctan2",
        "hypot",
        "minimum",
        "maximum",
    )
}
FUNCTIONS: dict[str, objects.Function] = {
    **_MATH,
    "where": objects.Function(ak.where),
    **objects.FUNCTIONS,
}
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_HINTS = {
    ast.BoolOp: "'and'/'or' are not element-wise, use & and | around parenthesised comparisons",
    ast.Not: "'not' is not element-wise, use ~",
    ast.IfExp: "'a if c else b' is not element-wise, use where(c, a, b)",
}


def _eval(node: ast.AST, names: Mapping[str, Any]) -> Any:
    return _NODES[type(node)](node, names)


def _compare(node: ast.Compare, names: Mapping[str, Any]) -> Any:
    values = [_eval(node.left, names), *(_eval(c, names) for c in node.comparators)]
    pairs = zip(node.ops, values, values[1:], strict=False)
    return functools.reduce(operator.and_, (_COMPARE[type(op)](a, b) for op, a, b in pairs))


def _call(node: ast.Call, names: Mapping[str, Any]) -> Any:
    arguments = [_eval(a, names) for a in node.args]
    keywords = {k.arg: _eval(k.value, names) for k in node.keywords}
    return FUNCTIONS[node.func.id].call(*arguments, **keywords)  # type: ignore[attr-defined]


def _slice(node: ast.Slice, names: Mapping[str, Any]) -> slice:
    parts = (node.lower, node.upper, node.step)
    return slice(*(None if p is None else _eval(p, names) for p in parts))


_NODES: dict[type[ast.AST], Callable[[Any, Mapping[str, Any]], Any]] = {
    ast.Expression: lambda n, names: _eval(n.body, names),
    ast.Name: lambda n, names: names[n.id],
    ast.Constant: lambda n, names: n.value,
    ast.Attribute: lambda n, names: getattr(_eval(n.value, names), n.attr),
    ast.Subscript: lambda n, names: _eval(n.value, names)[_eval(n.slice, names)],
    ast.Slice: _slice,
    ast.Tuple: lambda n, names: tuple(_eval(e, names) for e in n.elts),
    ast.BinOp: lambda n, names: _BINARY[type(n.op)](_eval(n.left, names), _eval(n.right, names)),
    ast.UnaryOp: lambda n, names: _UNARY[type(n.op)](_eval(n.operand, names)),
    ast.Compare: _compare,
    ast.Call: _call,
}
_ALLOWED = set(_NODES) | set(_BINARY) | set(_UNARY) | set(_COMPARE) | {ast.Load, ast.keyword}


def _check(node: ast.AST) -> None:
    kind = type(node)
    if kind not in _ALLOWED:
        raise ExpressionError(_HINTS.get(kind, f"{kind.__name__} is not allowed"))
    if isinstance(node, ast.Constant) and type(node.value) not in (int, float, bool):
        raise ExpressionError(f"only numbers are allowed as constants, got {node.value!r}")
    if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
        raise ExpressionError(f"private attribute {node.attr!r} is not allowed")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise ExpressionError(
                f"cannot call {ast.unparse(node.func)!r}, the functions are {sorted(FUNCTIONS)}"
            )
        if any(k.arg is None for k in node.keywords):
            raise ExpressionError("'**' arguments are not allowed")


@functools.lru_cache(maxsize=256)
def parse(text: str) -> Expression:
    """Parse and validate an expression.

    Args:
        text: The expression, e.g. ``"lead(Muon.pt, 0, default=0)"``.

    Returns:
        The parsed expression, with the names and collection fields it reads.

    Raises:
        ExpressionError: Invalid syntax or a construct outside the language (one line).

    Example:
        >>> sorted(parse("count(Jet[Jet.pt > 30]) + NMuon").names)
        ['Jet', 'NMuon']
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ExpressionError(f"invalid syntax at column {error.offset}") from None
    nodes = list(ast.walk(tree))
    for node in nodes:
        _check(node)
    called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
    names = {n.id for n in nodes if isinstance(n, ast.Name) and id(n) not in called}
    fields = {n.attr for n in nodes if isinstance(n, ast.Attribute)}
    for node in nodes:
        if isinstance(node, ast.Call):
            fields |= set(FUNCTIONS[node.func.id].fields)  # type: ignore[attr-defined]
    return Expression(text, tree, frozenset(names), frozenset(fields))


def evaluate(expression: Expression, names: Mapping[str, Any]) -> Any:
    """Evaluate a parsed expression.

    Args:
        expression: From :func:`parse`.
        names: A value (awkward array, number) for every name in ``expression.names``.

    Returns:
        The value: an awkward array, or a number for a constant expression.

    Raises:
        Exception: Whatever the array operations raise (the caller names the feature).
    """
    return _eval(expression.tree, names)
