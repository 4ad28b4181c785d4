"""Spellings the rules warn about, found in a policy and in the functions it calls.

* :class:`UnsafeSettingCasts` -- ``current_setting(...)`` cast to a non-text type without ``nullif``:
  ``''::uuid`` raises an error once the setting has been reset (a pooled connection after ``SET LOCAL`` /
  ``set_config(..., true)``);
* :class:`PerRowCalls` -- ``auth.uid()``, ``auth.jwt()``, ``auth.role()``, ``auth.email()`` and
  ``current_setting()`` outside a scalar subquery: PostgreSQL then evaluates them once per row instead of once
  per query (initplan);
* :class:`UserMetadata` -- the JWT's ``user_metadata`` claim or ``auth.users.raw_user_meta_data``, which the
  user can edit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Optional

from pglast import ast
from pglast.enums import SubLinkType

from dbguard_pipeline.model.schema import Function
from dbguard_pipeline.policy.context import is_setting_read
from dbguard_pipeline.policy.fold import TEXT_TYPES
from dbguard_pipeline.policy.inline import AUTH_FUNCS, body_tree
from dbguard_pipeline.policy.parse import (
    JSON_OPERATORS,
    Node,
    Visitor,
    children,
    func_name,
    names,
    operator,
    path_keys,
    type_name,
)
from dbguard_pipeline.policy.printer import snippet
from dbguard_pipeline.policy.scope import OUTER

_UNSAFE_CAST_TEXT = re.compile(
    r"current_setting\s*\([^()]*\)\s*::\s*(?!text\b|varchar\b|character varying\b|name\b)"
    r"([a-z_][a-z0-9_]*)",
    re.I,
)
_USER_METADATA_TEXT = re.compile(r"user_metadata|raw_user_meta_data", re.I)
_USER_METADATA_KEYS = ("user_metadata", "raw_user_meta_data")


class Finder(Visitor):
    """A detector: what it finds, as text for finding messages."""

    def __init__(self) -> None:
        self.found: list[str] = []

    @staticmethod
    def in_text(body: str) -> list[str]:
        """What it finds in the text of a function body it cannot parse."""
        return []

    @classmethod
    def in_policy(cls, nodes: Iterable[Node], called: Iterable[Function]) -> list[str]:
        """What it finds in the expression (its nodes, as parse.walk lists them) and in the bodies of the
        functions it calls (each once)."""
        visitor = cls()
        visitor.visit_nodes(nodes)
        found = visitor.found
        for fn in called:
            tree = body_tree(fn)
            hits = cls.in_tree(tree) if tree is not None else cls.in_text(fn.body or "")
            found.extend(f"{c} in {fn.schema}.{fn.name}()" for c in hits)
        return sorted(set(found), key=found.index)

    @classmethod
    def in_tree(cls, tree: Any) -> list[str]:
        visitor = cls()
        visitor(tree)
        return visitor.found


class UnsafeSettingCasts(Finder):
    @staticmethod
    def in_text(body: str) -> list[str]:
        return ["current_setting(...)::" + m for m in _UNSAFE_CAST_TEXT.findall(body)]

    def visit_TypeCast(self, node: ast.TypeCast) -> None:
        if type_name(node).lower() in TEXT_TYPES:
            return
        inner = node.arg
        while isinstance(inner, ast.TypeCast) and type_name(inner).lower() in TEXT_TYPES:
            inner = inner.arg
        if isinstance(inner, ast.FuncCall) and is_setting_read(inner):
            self.found.append(f"{snippet(inner)}::{type_name(node)}")


class UserMetadata(Finder):
    @staticmethod
    def in_text(body: str) -> list[str]:
        return ["user_metadata"] if _USER_METADATA_TEXT.search(body) else []

    def visit_A_Expr(self, node: ast.A_Expr) -> None:
        op = operator(node.name)
        if op in JSON_OPERATORS:
            keys = path_keys(node.rexpr if isinstance(node.rexpr, ast.Node) else None)
            if any(k.lower() in _USER_METADATA_KEYS for k in keys):
                self.found.append(f"{snippet(node.lexpr, 60)} {op} 'user_metadata'")

    def visit_ColumnRef(self, node: ast.ColumnRef) -> None:
        fields = names(node.fields)
        if fields and fields[-1].lower() == "raw_user_meta_data":
            self.found.append(".".join(f for f in fields if not f.startswith(OUTER)))


class PerRowCalls:
    """Depth first in source order; what a scalar or ARRAY subquery computes is evaluated once."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def __call__(self, tree: Optional[Node]) -> None:
        stack: list[tuple[Node, bool]] = [(tree, False)] if tree is not None else []
        while stack:
            node, wrapped = stack.pop()
            if isinstance(node, ast.SubLink) and node.subLinkType in (
                SubLinkType.EXPR_SUBLINK,
                SubLinkType.ARRAY_SUBLINK,
            ):
                stack.extend((n, w) for n, w in ((node.testexpr, wrapped), (node.subselect, True)) if n is not None)
                continue
            if isinstance(node, ast.FuncCall) and not wrapped:
                schema, name = func_name(node)
                if (schema == "auth" and name in AUTH_FUNCS) or is_setting_read(node):
                    label = f"{schema + '.' if schema == 'auth' else ''}{name}()"
                    if label not in self.found:
                        self.found.append(label)
            stack.extend([(c, wrapped) for c in children(node)][::-1])


def per_row_calls(node: Node) -> list[str]:
    visitor = PerRowCalls()
    visitor(node)
    return visitor.found


def unsafe_casts(nodes: Iterable[Node], called: Iterable[Function]) -> list[str]:
    return UnsafeSettingCasts.in_policy(nodes, called)


def user_metadata(nodes: Iterable[Node], called: Iterable[Function]) -> list[str]:
    return UserMetadata.in_policy(nodes, called)
