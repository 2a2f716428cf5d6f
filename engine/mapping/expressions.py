"""Sandboxed Jinja2 expressions for `when:`, `expr:` and reason templates.

Expressions are compiled once at load in an immutable sandbox: they can compute and compare,
never import, open files, call unsafe methods or mutate the charge they look at.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.mapping.convert import TYPES

__all__ = ["Expression", "ExpressionSyntaxError", "compile_expression", "compile_template",
           "expression_tree", "get_attr", "get_item"]


class ExpressionSyntaxError(ValueError):
    """An expression or template does not parse; the message says where in it."""


def _decimal(value: Any) -> Decimal | None:
    return None if value is None or value == "" else TYPES["decimal"](value)


def _money(value: Any) -> Decimal | None:
    return None if value is None or value == "" else TYPES["money"](value)


_ENV = ImmutableSandboxedEnvironment(autoescape=False)
_ENV.globals.update(decimal=_decimal, money=_money)
_ENV.filters.update(decimal=_decimal, money=_money)

Expression = Callable[[dict[str, Any]], Any]
_Node = Callable[[dict[str, Any]], Any]


def _none(_ns: dict[str, Any]) -> None:
    return None


class _Unsupported(Exception):
    """The expression uses something the fast translation does not cover."""


def _getattr(obj: Any, attr: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(attr)
    value = _ENV.getattr(obj, attr)  # the sandbox decides what is safe to read
    return None if isinstance(value, Undefined) else value


def _getitem(obj: Any, key: Any) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    if isinstance(obj, list | tuple | str) and isinstance(key, int):
        return obj[key] if -len(obj) <= key < len(obj) else None
    value = _ENV.getitem(obj, key)
    return None if isinstance(value, Undefined) else value


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "lteq": operator.le,
    "gt": operator.gt, "gteq": operator.ge,
    "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}
_BINARY: dict[type[nodes.Node], Callable[[Any, Any], Any]] = {
    nodes.Add: operator.add, nodes.Sub: operator.sub, nodes.Mul: operator.mul,
    nodes.Div: operator.truediv, nodes.FloorDiv: operator.floordiv, nodes.Mod: operator.mod,
}
_SAFE_CALLS = {"hl7", "decimal", "money"}


def _translate(node: nodes.Node) -> _Node:
    """Translate a parsed expression into plain closures, or raise _Unsupported."""
    if isinstance(node, nodes.Const):
        value = node.value
        return lambda ns: value
    if isinstance(node, nodes.Name):
        name = node.name
        fallback = _ENV.globals.get(name)
        return lambda ns: ns.get(name, fallback)
    if isinstance(node, nodes.Getattr):
        inner, attr = _translate(node.node), node.attr
        return lambda ns: _getattr(inner(ns), attr)
    if isinstance(node, nodes.Getitem):
        inner, key = _translate(node.node), _translate(node.arg)
        return lambda ns: _getitem(inner(ns), key(ns))
    if isinstance(node, nodes.Compare):
        first = _translate(node.expr)
        ops = [(_COMPARE[op.op], _translate(op.expr)) for op in node.ops]
        if len(ops) == 1:
            ((test, right),) = ops
            return lambda ns: test(first(ns), right(ns))

        def chained(ns: dict[str, Any]) -> bool:
            left = first(ns)
            for test, right in ops:
                value = right(ns)
                if not test(left, value):
                    return False
                left = value
            return True

        return chained
    if isinstance(node, nodes.And):
        left, right = _translate(node.left), _translate(node.right)
        return lambda ns: left(ns) and right(ns)
    if isinstance(node, nodes.Or):
        left, right = _translate(node.left), _translate(node.right)
        return lambda ns: left(ns) or right(ns)
    if isinstance(node, nodes.Not):
        inner = _translate(node.node)
        return lambda ns: not inner(ns)
    if isinstance(node, nodes.Neg):
        inner = _translate(node.node)
        return lambda ns: -inner(ns)
    if isinstance(node, nodes.Pos):
        inner = _translate(node.node)
        return lambda ns: +inner(ns)
    if type(node) in _BINARY:
        op = _BINARY[type(node)]
        left, right = _translate(node.left), _translate(node.right)  # type: ignore[attr-defined]
        return lambda ns: op(left(ns), right(ns))
    if isinstance(node, nodes.Concat):
        pieces = [_translate(n) for n in node.nodes]
        return lambda ns: "".join(str(p(ns)) for p in pieces)
    if isinstance(node, nodes.CondExpr):
        cond, yes = _translate(node.test), _translate(node.expr1)
        no: _Node = _translate(node.expr2) if node.expr2 is not None else _none
        return lambda ns: yes(ns) if cond(ns) else no(ns)
    if isinstance(node, nodes.Tuple | nodes.List):
        items = [_translate(n) for n in node.items]
        make = tuple if isinstance(node, nodes.Tuple) else list
        return lambda ns: make(item(ns) for item in items)
    if isinstance(node, nodes.Test) and node.name == "none" and not node.args:
        inner = _translate(node.node)
        return lambda ns: inner(ns) is None
    if (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name)
            and node.node.name in _SAFE_CALLS and not node.kwargs
            and node.dyn_args is None and node.dyn_kwargs is None):
        func = _translate(node.node)
        args = [_translate(a) for a in node.args]
        return lambda ns: func(ns)(*(a(ns) for a in args))
    raise _Unsupported(type(node).__name__)


def compile_expression(source: str) -> Expression:
    """Compile `source` once into `expr(namespace) -> value`.

    Names and attributes that do not exist evaluate to None, so `charge.units or 1` works
    on an empty field. Common expressions (comparisons, and/or/not, arithmetic, `is none`,
    `in`, if-else, attribute and item reads) are translated into plain closures; anything
    else (filters, tests, other calls) runs through Jinja's own sandboxed evaluation.
    """
    try:
        parser = Parser(_ENV, source, state="variable")
        tree = parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            raise TemplateSyntaxError(f"unexpected {token.value!r}", token.lineno)
        jinja = _ENV.compile_expression(source, undefined_to_none=True)
    except TemplateSyntaxError as exc:
        raise ExpressionSyntaxError(f"expression does not parse: {exc.message}") from None
    try:
        translated = _translate(tree)
    except _Unsupported:
        return lambda ns: jinja(**ns)
    # Kept so the code generator can write the same expression inline (codegen.py).
    translated.tree = tree  # type: ignore[attr-defined]
    return translated


def expression_tree(expr: Expression) -> nodes.Node | None:
    """The parsed tree of an expression the closures cover, else None (Jinja evaluates it)."""
    tree = getattr(expr, "tree", None)
    return tree if isinstance(tree, nodes.Node) else None


get_attr = _getattr
get_item = _getitem


def compile_template(source: str) -> Callable[[dict[str, Any]], str]:
    """Compile a reason text; `{{ ... }}` parts are filled from the namespace when used."""
    if "{{" not in source and "{%" not in source:
        return lambda _ns: source
    try:
        template = _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise ExpressionSyntaxError(f"template does not parse: {exc.message}") from None
    return template.render
