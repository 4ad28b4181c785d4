"""SQL and PL/pgSQL functions a policy calls, read as the expressions they return.

A call such as ``public.current_tenant_id()`` or ``public.is_member(tenant_id)`` is analysed by inlining the
function: its body's returned expressions (``SELECT <expr>``, ``RETURN <expr>``, ``RETURN QUERY``, a variable
filled by ``SELECT ... INTO``), with the parameters replaced by the call's arguments. Bodies are parsed once
per text (cached); the Analyzer holds one :class:`Functions` per audit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any, Optional

from pglast import ast
from pglast.enums import SubLinkType
from pglast.parser import ParseError, parse_plpgsql_json

from dbguard_pipeline.model.schema import Function, Snapshot
from dbguard_pipeline.policy.normal import normalize
from dbguard_pipeline.policy.parse import (
    Node,
    PolicyParseError,
    func_name,
    is_plain,
    names,
    parse_statements,
    target_values,
    walk,
    with_members,
)
from dbguard_pipeline.policy.scope import OUTER, FunctionKey

# The expressions a body returns, and the values its variables are assigned.
Body = tuple[tuple[Node, ...], Mapping[str, Node]]

# Supabase's auth helpers: they read the request's JWT, so they are the caller's context, never inlined.
AUTH_FUNCS = frozenset({"uid", "jwt", "role", "email"})
AUTH_IDENTITY_FUNCS = frozenset({"uid", "email"})

NULL_CONST = ast.A_Const(isnull=True)  # a parameter left to its default: assumed NULL (the usual default)


class Functions:
    """The snapshot's functions, looked up the way a call names them, and their bodies."""

    def __init__(self, snapshot: Optional[Snapshot], platform_schemas: frozenset[str]):
        self.platform_schemas = platform_schemas
        self._by_key: dict[tuple[str, str], list[Function]] = {}
        self._by_name: dict[str, list[Function]] = {}
        for f in snapshot.functions if snapshot else ():
            self._by_key.setdefault((f.schema, f.name), []).append(f)
            self._by_name.setdefault(f.name, []).append(f)
        self._bodies: dict[FunctionKey, Optional[Body]] = {}

    def find(self, schema: Optional[str], name: str, nargs: int) -> Optional[Function]:
        cands = (
            self._by_key.get((schema, name), [])
            if schema
            else (self._by_key.get(("public", name)) or self._by_name.get(name, []))
        )
        cands = [f for f in cands if _arg_count(f.arguments) == nargs] or (cands if len(cands) == 1 else [])
        return cands[0] if cands else None

    def find_call(self, call: ast.FuncCall) -> Optional[Function]:
        schema, name = func_name(call)
        return self.find(schema, name, len(call.args or ()))

    def returns(
        self, fn: Function, args: tuple[Node, ...] = (), bind: Optional[Callable[[Node], Node]] = None
    ) -> list[Node]:
        """The expressions ``fn`` returns, with its parameters replaced by the call's arguments (each passed
        through ``bind`` first, so that its column references keep pointing at the caller's scopes)."""
        key = (fn.schema, fn.name, fn.arguments)
        if key not in self._bodies:
            self._bodies[key] = _normal_body(
                _body_returns(fn.language, fn.body or "", fn.arguments or "", fn.returns or "")
            )
        body = self._bodies[key]
        if not body:
            return []
        exprs, variables = body
        params = _arg_names(fn.arguments)
        if not args and not params and not variables:
            return list(exprs)  # nothing to substitute: the parsed body is shared (never mutated)
        bound = [bind(a) if bind is not None else a for a in args]
        bound += [NULL_CONST] * max(0, len(params) - len(bound))
        return [_substitute(e, bound, params, fn.name, variables) for e in exprs]

    def called(self, tree: Any, nodes: Optional[list[Node]] = None) -> list[Function]:
        """User functions (with a body) the expression calls, directly or through other functions.
        ``nodes``: the tree's nodes, when the caller has walked it already."""
        out: list[Function] = []
        seen: set[FunctionKey] = set()
        todo = [tree]
        while todo and len(seen) < 50:
            cur = todo.pop()
            for node in nodes if nodes is not None and cur is tree else walk(cur):
                if not isinstance(node, ast.FuncCall):
                    continue
                fn = self.find_call(node)
                if fn is None or fn.schema in self.platform_schemas or fn.schema == "pg_catalog":
                    continue
                key = (fn.schema, fn.name, fn.arguments)
                if key in seen:
                    continue
                seen.add(key)
                out.append(fn)
                body = body_tree(fn)
                if body is not None:
                    todo.append(body)
        return out


def _normal_body(body: Optional[Body]) -> Optional[Body]:
    """A body's expressions with equivalent spellings rewritten (normal.py), as the policy's own are."""
    if body is None:
        return None
    exprs, variables = body
    return (tuple(normalize(e) or e for e in exprs), {k: normalize(v) or v for k, v in variables.items()})


def body_tree(fn: Function) -> Optional[tuple[Any, ...]]:
    """What detectors read of a function: a SQL body's statements, a PL/pgSQL body's returned expressions and
    variables; None when it cannot be read (then they fall back to the body's text)."""
    if not fn.body:
        return None
    return _body_tree(fn.language, fn.body, fn.arguments or "", fn.returns or "")


def rebuild(node: Node, change: Callable[[Node], Node]) -> Node:
    """A copy of ``node`` with ``change`` applied to each node directly below it (attributes set directly:
    pglast's setters validate each value, which is slow, and every value here comes from a parsed tree)."""
    return with_members(node, {m: _rebuild_value(getattr(node, m), change) for m in node})


def _rebuild_value(value: Any, change: Callable[[Node], Node]) -> Any:
    if isinstance(value, ast.Node):
        return change(value)
    if type(value) is tuple:
        return tuple(_rebuild_value(v, change) for v in value)
    return value


def bind(arg: Node, resolve: Callable[[list[str]], int]) -> Node:
    """An argument whose column references name their scope level explicitly (``OUTER<level>.column``), so
    that they keep pointing at it once the argument is placed inside the function body."""
    if isinstance(arg, ast.ColumnRef):
        fields = names(arg.fields)
        if fields and fields[-1] != "*":
            lvl = resolve(fields)
            return ast.ColumnRef(fields=(ast.String(sval=f"{OUTER}{lvl}"), ast.String(sval=fields[-1])))
        return arg
    if isinstance(arg, ast.SubLink):
        return arg
    return rebuild(arg, lambda c: bind(c, resolve))


def _substitute(
    node: Node, args: list[Node], params: list[Optional[str]], fname: str, variables: Mapping[str, Node]
) -> Node:
    if isinstance(node, ast.ParamRef):
        n = node.number or 0
        if 1 <= n <= len(args):
            return args[n - 1]
        return node
    if isinstance(node, ast.ColumnRef):
        fields = names(node.fields)
        name = None
        if len(fields) == 1:
            name = fields[0]
        elif len(fields) == 2 and fields[0] == fname:
            name = fields[1]
        if name is not None:
            # a variable (or a parameter) the body assigns before it returns holds the assigned value
            if name in variables and len(fields) == 1:
                return _substitute(variables[name], args, params, fname, {})
            if name in params:
                i = params.index(name)
                if i < len(args):
                    return args[i]
        return node
    return rebuild(node, lambda c: _substitute(c, args, params, fname, variables))


def _select_as_expr(sel: ast.SelectStmt) -> Node:
    """A SELECT as the expression it yields: its target when it reads no table, else a scalar subquery."""
    targets = target_values(sel)
    if not sel.fromClause and not sel.whereClause and len(targets) == 1 and is_plain(sel) and targets[0]:
        return targets[0]
    return ast.SubLink(subLinkType=SubLinkType.EXPR_SUBLINK, subLinkId=0, subselect=sel)


def _single_select(query: str) -> Optional[Node]:
    """The expression a one-statement SELECT text yields, or None."""
    try:
        stmts = parse_statements(query)
    except PolicyParseError:
        return None
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.SelectStmt):
        return None
    return _select_as_expr(stmts[0].stmt)


@lru_cache(maxsize=2048)
def _body_returns(language: str, body: str, arguments: str, returns: str) -> Optional[Body]:
    lang = (language or "").lower()
    if not body or not body.strip():
        return None
    if lang == "sql":
        try:
            stmts = parse_statements(body)
        except PolicyParseError:
            return None
        sels = [s.stmt for s in stmts if isinstance(s.stmt, ast.SelectStmt)]
        return ((_select_as_expr(sels[-1]),), {}) if sels else None
    if lang == "plpgsql":
        return _plpgsql_returns(body, arguments, returns)
    return None


@lru_cache(maxsize=2048)
def _body_tree(language: str, body: str, arguments: str, returns: str) -> Optional[tuple[Any, ...]]:
    lang = (language or "").lower()
    if lang == "sql":
        try:
            return parse_statements(body)
        except PolicyParseError:
            return None
    if lang == "plpgsql":
        r = _body_returns(language, body, arguments, returns)
        if r is None:
            return None
        exprs, variables = r
        return (exprs, tuple(variables.values()))
    return None


# --------------------------------------------------------------------------- PL/pgSQL
# libpg_query gives PL/pgSQL only as JSON (pglast has no typed nodes for it); the SQL inside is parsed typed.
def _json_nodes(tree: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(type, body) of every node of a PL/pgSQL JSON tree, depth first, later siblings first."""
    stack = [tree]
    while stack:
        cur = stack.pop()
        if type(cur) is list:
            stack.extend(cur)
            continue
        if type(cur) is not dict:
            continue
        if len(cur) == 1:
            for k, v in cur.items():
                if type(v) is dict and "A" <= k[:1] <= "Z":
                    yield k, v
                    cur = v
        stack.extend(x for x in cur.values() if type(x) in (dict, list))


def _json_type(node: Any) -> tuple[Optional[str], dict[str, Any]]:
    if type(node) is dict and len(node) == 1:
        for k, v in node.items():
            if type(v) is dict and "A" <= k[:1] <= "Z":
                return k, v
    return None, {}


def _json_body(node: Any) -> dict[str, Any]:
    return _json_type(node)[1]


def _plpgsql_returns(body: str, arguments: str, returns: str) -> Optional[Body]:
    tag = "$dbguard_body$"
    if tag in body:
        return None
    src = f"CREATE FUNCTION dbguard_f({arguments}) RETURNS {returns or 'void'} LANGUAGE plpgsql AS {tag}{body}{tag}"
    try:
        fn = json.loads(parse_plpgsql_json(src))
    except (ParseError, ValueError, RecursionError):  # not PL/pgSQL we can read (ValueError: bad JSON)
        return None
    exprs: list[Node] = []
    variables: dict[str, Node] = {}
    datums: list[Any] = []
    top: set[int] = set()  # the statements of the function's outer block: run unconditionally
    for f in fn if isinstance(fn, list) else [fn]:
        datums = _json_body(f).get("datums", [])
        block = _json_body(_json_body(f).get("action"))
        top |= {id(_json_body(st)) for st in block.get("body", []) or ()}
    params = set(_arg_names(arguments))
    maybe: dict[str, Node] = {}  # parameters assigned only on some paths: the argument, or this value

    def refname(varno: int) -> Optional[str]:
        if 0 <= varno < len(datums):
            return _json_body(datums[varno]).get("refname")
        return None

    def query(node: Any) -> Optional[str]:
        return _json_body(node).get("query")

    for t, b in _json_nodes(fn):
        if t == "PLpgSQL_stmt_return" and b.get("expr"):
            e = _single_select(f"SELECT {q}") if (q := query(b["expr"])) else None
            if e is not None:
                exprs.append(e)
        elif t == "PLpgSQL_stmt_return_query" and b.get("query"):
            e = _single_select(q) if (q := query(b["query"])) else None
            if e is not None:
                exprs.append(e)
        elif t == "PLpgSQL_stmt_assign" and b.get("expr"):
            name = refname(b.get("varno", 0))  # the JSON leaves out a zero: datum 0, the first parameter
            q = query(b["expr"])
            e = _single_select(f"SELECT {_ASSIGNED.sub('', q, count=1)}") if q else None
            if name and e is not None:
                if name in params and id(b) not in top:
                    maybe[name] = e
                else:
                    variables[name] = e
        elif t == "PLpgSQL_stmt_execsql" and b.get("into") and b.get("sqlstmt"):
            tt, tb = _json_type(b.get("target"))
            into = (
                [f.get("name") for f in tb.get("fields", [])]
                if tt == "PLpgSQL_row"
                else ([tb.get("refname")] if tt == "PLpgSQL_var" else [])
            )
            e = _single_select(q) if (q := query(b["sqlstmt"])) else None
            if len(into) == 1 and into[0] and e is not None:
                if into[0] in params and id(b) not in top:
                    maybe[into[0]] = e
                else:
                    variables[into[0]] = e
    # "RETURN v;" of a plain variable: libpg_query keeps only its number, so read the name from the text
    for name in re.findall(r"(?is)\breturn\s+([a-z_][a-z0-9_]*)\s*;", body):
        name = name.lower()
        if name in ("next", "query", "null", "true", "false"):
            continue
        if name in variables:
            exprs.append(variables[name])
        elif name in maybe:
            exprs += [ast.ColumnRef(fields=(ast.String(sval=name),)), maybe[name]]
    return (tuple(exprs), variables) if exprs else None


# the target of an assignment as libpg_query gives it ("v := expr", "v = expr", "r.f := expr", "a[1] := expr")
_ASSIGNED = re.compile(
    r'^\s*(?:"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)(?:\s*\.\s*(?:"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*))*'
    r"(?:\s*\[[^\]]*\])*\s*:?=\s*",
    re.I,
)


# --------------------------------------------------------------------------- argument lists
def _arg_count(arguments: str) -> int:
    return len(_split_args(arguments))


def _split_args(arguments: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in arguments or "":
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return [p for p in parts if not re.match(r"(?i)^out\s", p)]


_TYPE_STARTS = {"character", "double", "timestamp", "time", "bit", "interval", "national", "varying"}


def _arg_names(arguments: str) -> list[Optional[str]]:
    """The parameters' names (None where only a type is given)."""
    found: list[Optional[str]] = []
    for p in _split_args(arguments):
        p = re.sub(r"(?i)^(in|inout|variadic)\s+", "", p)
        m = re.match(r'^("(?:[^"]|"")+"|[^\s"]+)\s+(.+)$', p)
        if m and m.group(1).lower() not in _TYPE_STARTS:
            n = m.group(1)
            found.append(n[1:-1].replace('""', '"') if n.startswith('"') else n.lower())
        else:
            found.append(None)
    return found
