"""``when`` conditions on slip steps (message filters, docs/wire-contract.md#the-routing-slip): a
small, safe expression
language over the payload. Parsed with ``ast`` and walked by a whitelist; nothing is evaluated.

    order.express
    order.quantity > 2 and order.country != "IS"
    not order.express or request.kind in ["order", "return"]

Names are dotted paths into the JSON payload (a missing path is ``null``); literals are strings,
numbers, ``true``/``false``/``null`` and lists of literals; operators are ``and``, ``or``,
``not``, ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``not in``.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from itinerant.errors import InvalidSlip

MAX_LENGTH = 256
_LITERALS = {"true": True, "false": False, "null": None}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


class InvalidCondition(InvalidSlip):
    reason = "invalid_condition"
    hint = "a step's `when` must be a condition like `order.express and order.quantity > 1`"


@lru_cache(maxsize=256)
def parse(expression: str) -> ast.expr:
    if len(expression) > MAX_LENGTH:
        raise InvalidCondition(f"condition longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError as exc:
        raise InvalidCondition(f"cannot parse condition {expression!r}: {exc.msg}") from exc
    _check(tree, expression)
    return tree


def _check(node: ast.AST, expression: str) -> None:
    allowed = (
        ast.BoolOp,
        ast.And,
        ast.Or,
        ast.UnaryOp,
        ast.Not,
        ast.Compare,
        ast.Name,
        ast.Attribute,
        ast.Constant,
        ast.List,
        ast.Tuple,
        ast.Load,
        *_COMPARE,
    )
    for child in ast.walk(node):
        if not isinstance(child, allowed):
            raise InvalidCondition(
                f"condition {expression!r} uses {type(child).__name__}, which is not allowed"
            )
        if isinstance(child, ast.UnaryOp) and not isinstance(child.op, ast.Not):
            raise InvalidCondition(f"condition {expression!r}: only `not` is allowed as unary")


def evaluate(expression: str, payload: Any) -> bool:
    """Whether the step applies to ``payload`` (a JSON-like dict)."""
    return bool(_eval(parse(expression), payload))


def _eval(node: ast.expr, payload: Any) -> Any:
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, payload) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp):
        return not _eval(node.operand, payload)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, payload)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, payload)
            try:
                if not _COMPARE[type(op)](left, right):
                    return False
            except TypeError:
                return False  # comparing null with a number, etc.: the condition does not hold
            left = right
        return True
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(e, payload) for e in node.elts]
    if isinstance(node, ast.Name | ast.Attribute):
        return _lookup(_path(node), payload)
    raise InvalidCondition(f"unsupported expression node {type(node).__name__}")


def _path(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [*_path(node.value), node.attr]
    raise InvalidCondition("a path must be made of names, like plan.needs_hotel")


def _lookup(path: list[str], payload: Any) -> Any:
    if len(path) == 1 and path[0] in _LITERALS:
        return _LITERALS[path[0]]
    value = payload
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
