"""Preselections: hard event selections written as expressions of event features.

A preselection is one boolean expression of the study's feature names, numbers, arithmetic
(``+ - * / **``), comparisons (chained ones too), the logical operators ``&&``, ``||``, ``!``
(or ``and``, ``or``, ``not``; ``&``, ``|``, ``~``) and the functions ``abs``, ``sqrt``,
``log``, ``exp``, ``min``, ``max``. For example::

    n_lepton == 3 && met > 30
    (abs(m_ll - 91.19) < 15) || n_jet >= 2

It is parsed once (:func:`parse`, a syntax error or an unknown feature is a ``ValueError``
naming the expression) into a function of the event columns that :mod:`jax.numpy`
evaluates, so the same preselection runs in training and in the hard evaluation, on nominal
and on feature-shifted events alike.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp

__all__ = ["Preselection", "parse"]

_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow, ast.Mod: operator.mod,
    ast.BitAnd: jnp.logical_and, ast.BitOr: jnp.logical_or,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": jnp.abs, "sqrt": jnp.sqrt, "log": jnp.log, "exp": jnp.exp,
    "min": jnp.minimum, "max": jnp.maximum,
}


class Preselection(NamedTuple):
    """A parsed preselection.

    Attributes:
        text: The expression as written.
        features: The feature names it reads.
        mask: ``mask(columns) -> (N,) bool`` for ``columns = {feature: (N,) array}``.
    """

    text: str
    features: frozenset[str]
    mask: Callable[[Mapping[str, Any]], Any]


def _python(text: str) -> str:
    """``&&``, ``||`` and ``!`` (not ``!=``) as Python's ``and``, ``or``, ``not``."""
    text = text.replace("&&", " and ").replace("||", " or ")
    return re.sub(r"!(?!=)", " not ", text)


def _compile(node: ast.AST, names: set[str], text: str) -> Callable[[Mapping[str, Any]], Any]:
    """A closure evaluating ``node`` on the columns (only whitelisted syntax)."""
    if isinstance(node, ast.Expression):
        return _compile(node.body, names, text)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(
        node.value, bool
    ):
        value = float(node.value)
        return lambda columns: value
    if isinstance(node, ast.Name):
        names.add(node.id)
        name = node.id
        return lambda columns: columns[name]
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, names, text) for v in node.values]
        combine = jnp.logical_and if isinstance(node.op, ast.And) else jnp.logical_or

        def boolean(columns: Mapping[str, Any]) -> Any:
            result = parts[0](columns)
            for part in parts[1:]:
                result = combine(result, part(columns))
            return result

        return boolean
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.Invert | ast.USub):
        inner = _compile(node.operand, names, text)
        if isinstance(node.op, ast.USub):
            return lambda columns: -inner(columns)
        return lambda columns: jnp.logical_not(inner(columns))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _compile(node.left, names, text), _compile(node.right, names, text)
        op = _BINARY[type(node.op)]
        return lambda columns: op(left(columns), right(columns))
    if isinstance(node, ast.Compare) and all(type(o) in _COMPARE for o in node.ops):
        terms = [_compile(t, names, text) for t in (node.left, *node.comparators)]
        ops = [_COMPARE[type(o)] for o in node.ops]

        def compare(columns: Mapping[str, Any]) -> Any:
            values = [term(columns) for term in terms]
            result = ops[0](values[0], values[1])
            for i, op in enumerate(ops[1:], start=1):
                result = jnp.logical_and(result, op(values[i], values[i + 1]))
            return result

        return compare
    if (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS and not node.keywords
    ):
        function = _FUNCTIONS[node.func.id]
        arguments = [_compile(a, names, text) for a in node.args]
        return lambda columns: function(*(a(columns) for a in arguments))
    shown = ast.unparse(node) if hasattr(ast, "unparse") else type(node).__name__
    raise ValueError(f"preselection {text!r}: {shown!r} is not allowed in a preselection")


def parse(text: str, features: Sequence[str]) -> Preselection:
    """Parse a preselection against the study's feature names.

    Args:
        text: The expression, e.g. ``"n_lepton == 3 && met > 30"``.
        features: The names it may read.

    Returns:
        :class:`Preselection`.

    Raises:
        ValueError: Invalid syntax, a construct outside the language, or an unknown feature.
    """
    try:
        tree = ast.parse(_python(text).strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"preselection {text!r}: invalid syntax") from None
    names: set[str] = set()
    body = _compile(tree, names, text)
    unknown = sorted(names - set(features))
    if unknown:
        raise ValueError(
            f"preselection {text!r}: unknown feature {unknown[0]!r}, choose from {list(features)}"
        )

    def mask(columns: Mapping[str, Any]) -> Any:
        return jnp.asarray(body(columns), bool)

    return Preselection(text, frozenset(names), mask)
