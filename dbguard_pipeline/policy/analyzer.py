"""Policy expression analysis on the real PostgreSQL parser (pglast).

Row level security policies arrive as text printed by ``pg_get_expr`` (USING and WITH CHECK). This module
parses that text with libpg_query (through pglast) and answers the questions the audit rules ask:

* :func:`always_true` -- constant folding of trivial predicates in any spelling (``true``, ``1 = 1``,
  ``'a' = 'a'``, ``(select true)``, ``tenant_id = tenant_id``, ``true or ...``, ``not false``,
  ``coalesce(true, ...)``, casts, nested parentheses, CASE with constant branches, ...).
* :func:`pins_tenant` -- does the expression restrict rows to the current tenant? That is: in every branch
  that can be true, the tenant column is compared with the tenant context, however the context is spelled
  (a GUC read with ``current_setting`` with or without ``nullif`` and casts, wrapped in ``(select ...)`` or
  not; a Supabase JWT claim; a SQL or PL/pgSQL function whose body returns one of these; a function named in
  the configuration; a membership subquery keyed by the current user, in ``IN``, ``= ANY``, ``EXISTS`` or
  scalar form; a boolean helper function such as ``is_member_of(tenant_id)`` whose body does one of these).
* detectors used by the rules: casts of ``current_setting(...)`` without ``nullif``
  (:func:`unsafe_setting_casts`), ``auth.uid()``/``auth.jwt()``/``current_setting()`` evaluated per row
  (:func:`per_row_calls`), policies that trust ``user_metadata`` from the JWT
  (:func:`user_metadata_references`).

The analysis works on the JSON parse tree (``pglast.parser.parse_sql_json``), so it is independent of
whitespace, parentheses, letter case of keywords and quoting. Text that does not parse never raises: the
analysis reports ``parsed=False`` and the rules treat it conservatively (as not pinning the tenant).

Levels of restriction, as the rules use them:

* ``FALSE``    -- the expression is never true (denies everything);
* ``TENANT``   -- the tenant column is pinned to the tenant context (directly or by membership);
* ``INDIRECT`` -- rows are restricted to the current principal some other way: another column compared
  with the context (``owner_id = auth.uid()``), or a correlated subquery through a parent row that is
  pinned (``exists (select 1 from projects p where p.id = project_id and p.tenant_id = <ctx>)``);
* ``NONE``     -- nothing ties the rows to the caller (``true``, ``auth.role() = 'authenticated'``, ...).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Iterator, Optional

from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.model.schema import Function, Policy, Snapshot, Table

# --------------------------------------------------------------------------- levels and kinds
FALSE, TENANT, INDIRECT, NONE = "false", "tenant", "indirect", "none"
LEVEL_RANK = {NONE: 0, INDIRECT: 1, TENANT: 2, FALSE: 3}

IDENTITY, TENANT_KIND = 1, 2  # kinds of context: who the caller is / which tenant the caller acts for
_BAD = -1  # an expression that depends on the row itself, so it is not "the context"

# Names under which tenant ids travel in JWT claims and settings, besides the configured ones.
TENANT_CLAIMS = frozenset({
    "tenant_id", "tenant", "tenantid", "org_id", "orgid", "org", "organization_id", "organisation_id",
    "organizationid", "organization", "organisation", "account_id", "accountid", "team_id", "teamid",
    "workspace_id", "workspaceid", "company_id", "companyid", "customer_id", "client_id",
})
IDENTITY_CLAIMS = frozenset({"sub", "email", "phone", "user_id", "userid", "uid"})
_TENANTISH_GUC = re.compile(r"tenant|org|account|company|workspace|team|customer|client", re.I)
_USERISH_GUC = re.compile(r"user|uid|sub\b|email", re.I)
# Supabase's auth helpers; they read the request's JWT.
AUTH_IDENTITY_FUNCS = frozenset({"uid", "email"})
AUTH_FUNCS = frozenset({"uid", "jwt", "role", "email"})
TEXT_TYPES = frozenset({"text", "varchar", "character varying", "bpchar", "char", "character", "name", "citext",
                        "unknown"})
_OUTER = "\x00L"  # qualifier prefix of column references bound to a known scope level
_MAX_DEPTH = 8


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return self.name


NULL = _Sentinel("NULL")
UNKNOWN = _Sentinel("UNKNOWN")


class PolicyParseError(ValueError):
    """The text is not a single SQL expression."""


# --------------------------------------------------------------------------- parsing
@lru_cache(maxsize=8192)
def _parse_json(sql_text: str) -> dict:
    from pglast.parser import ParseError, parse_sql_json

    try:
        return json.loads(parse_sql_json(sql_text))
    except ParseError as exc:
        raise PolicyParseError(str(exc)) from None
    except RecursionError:
        raise PolicyParseError("expression nested too deeply") from None


def parse_expression(text: str) -> dict:
    """Parse one SQL expression and return its node (pglast JSON form). Raises PolicyParseError."""
    if text is None or not str(text).strip():
        raise PolicyParseError("empty expression")
    tree = _parse_json(f"SELECT 1 WHERE ({text}\n)")
    stmts = tree.get("stmts") or []
    if len(stmts) != 1:
        raise PolicyParseError("not a single expression")
    sel = stmts[0].get("stmt", {}).get("SelectStmt")
    if not sel or set(sel) - {"targetList", "whereClause", "limitOption", "op"} or "whereClause" not in sel:
        raise PolicyParseError("not a single expression")
    return sel["whereClause"]


_EMPTY: dict = {}


def _ntype(node: Any) -> tuple[Optional[str], dict]:
    if type(node) is dict and len(node) == 1:
        for k, v in node.items():
            if type(v) is dict and "A" <= k[:1] <= "Z":
                return k, v
    return None, _EMPTY


def _names(lst: Optional[list]) -> list[str]:
    out = []
    for n in lst or ():
        t, b = _ntype(n)
        if t == "String":
            out.append(b.get("sval", ""))
        elif t == "A_Star":
            out.append("*")
    return out


def _func_name(body: dict) -> tuple[Optional[str], str]:
    parts = _names(body.get("funcname"))
    if not parts:
        return None, ""
    if len(parts) == 1:
        return None, parts[0]
    return parts[-2], parts[-1]


def _type_name(body: dict) -> str:
    tn = body.get("typeName", {})
    parts = [p for p in _names(tn.get("names")) if p != "pg_catalog"]
    name = ".".join(parts) if parts else "?"
    if tn.get("arrayBounds"):
        name += "[]"
    return name


def _const_string(node: Any) -> Optional[str]:
    """The value of a string literal, through casts to text types; else None."""
    t, b = _ntype(node)
    while t == "TypeCast":
        node = b.get("arg")
        t, b = _ntype(node)
    if t == "A_Const" and "sval" in b:
        return (b.get("sval") or {}).get("sval", "")
    return None


def _iter_children(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for v in node.values():
            if isinstance(v, (dict, list)):
                yield v
    elif isinstance(node, list):
        yield from node


def _typed_children(body: Any) -> Iterator[Any]:
    """The typed nodes directly below a node body, looking through plain dicts and lists."""
    stack = list(_iter_children(body))
    while stack:
        cur = stack.pop(0)
        if _ntype(cur)[0] is not None:
            yield cur
        else:
            stack[:0] = list(_iter_children(cur))


def _walk(node: Any) -> Iterator[tuple[str, dict]]:
    """Every typed node below (and including) node."""
    stack = [node]
    pop, push = stack.pop, stack.append
    while stack:
        cur = pop()
        tc = type(cur)
        if tc is list:
            stack.extend(cur)
            continue
        if tc is not dict:
            continue
        if len(cur) == 1:
            for k, v in cur.items():
                if type(v) is dict and "A" <= k[:1] <= "Z":
                    yield k, v
                    cur = v
        for x in cur.values():
            tx = type(x)
            if tx is dict or tx is list:
                push(x)


# --------------------------------------------------------------------------- tiny printer for messages
def snippet(node: Any, limit: int = 120) -> str:
    """A readable (not necessarily complete) rendering of an expression node, for finding messages."""
    try:
        text = _print(node)
    except Exception:  # pragma: no cover - printing is best effort
        text = "..."
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _q(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name or "") else '"' + (name or "").replace('"', '""') + '"'


def _print(node: Any) -> str:
    t, b = _ntype(node)
    if t == "A_Const":
        if b.get("isnull"):
            return "NULL"
        if "boolval" in b:
            return "true" if (b["boolval"] or {}).get("boolval") else "false"
        if "ival" in b:
            return str((b["ival"] or {}).get("ival", 0))
        if "fval" in b:
            return str((b["fval"] or {}).get("fval", "0"))
        if "sval" in b:
            return "'" + (b["sval"] or {}).get("sval", "").replace("'", "''") + "'"
        return "?"
    if t == "ColumnRef":
        return ".".join("*" if n == "*" else _q(n) for n in _names(b.get("fields")) if not n.startswith(_OUTER))
    if t == "FuncCall":
        schema, name = _func_name(b)
        args = ", ".join(_print(a) for a in b.get("args", []))
        return f"{_q(schema) + '.' if schema else ''}{_q(name)}({'*' if b.get('agg_star') else args})"
    if t == "TypeCast":
        return f"{_print(b.get('arg'))}::{_type_name(b)}"
    if t == "A_Expr":
        op = " ".join(_names(b.get("name")))
        kind = b.get("kind")
        if kind == "AEXPR_NULLIF":
            return f"nullif({_print(b.get('lexpr'))}, {_print(b.get('rexpr'))})"
        if kind == "AEXPR_OP_ANY":
            return f"{_print(b.get('lexpr'))} {op} ANY ({_print(b.get('rexpr'))})"
        if kind == "AEXPR_IN":
            items = ", ".join(_print(i) for i in _ntype(b.get("rexpr"))[1].get("items", []))
            return f"{_print(b.get('lexpr'))} {'IN' if op == '=' else 'NOT IN'} ({items})"
        if "lexpr" not in b:
            return f"{op} {_print(b.get('rexpr'))}"
        return f"({_print(b.get('lexpr'))} {op} {_print(b.get('rexpr'))})"
    if t == "BoolExpr":
        op = b.get("boolop")
        if op == "NOT_EXPR":
            return f"NOT {_print(b['args'][0])}"
        sep = " AND " if op == "AND_EXPR" else " OR "
        return "(" + sep.join(_print(a) for a in b.get("args", [])) + ")"
    if t == "SubLink":
        kind = b.get("subLinkType")
        inner = "SELECT ..."
        sel = _ntype(b.get("subselect"))[1]
        if not sel.get("fromClause") and len(sel.get("targetList", [])) == 1:
            inner = "SELECT " + _print(_ntype(sel["targetList"][0])[1].get("val"))
        if kind == "EXISTS_SUBLINK":
            return f"EXISTS ({inner})"
        if kind == "ANY_SUBLINK":
            return f"{_print(b.get('testexpr'))} IN ({inner})"
        if kind == "ARRAY_SUBLINK":
            return f"ARRAY({inner})"
        return f"({inner})"
    if t == "CoalesceExpr":
        return "coalesce(" + ", ".join(_print(a) for a in b.get("args", [])) + ")"
    if t == "NullTest":
        return f"{_print(b.get('arg'))} IS {'NOT ' if b.get('nulltesttype') == 'IS_NOT_NULL' else ''}NULL"
    if t == "SQLValueFunction":
        return (b.get("op") or "").replace("SVFOP_", "").lower()
    if t == "A_ArrayExpr":
        return "ARRAY[" + ", ".join(_print(a) for a in b.get("elements", [])) + "]"
    if t == "ParamRef":
        return f"${b.get('number', 0)}"
    return "..."


# --------------------------------------------------------------------------- scopes
@dataclass
class _Scope:
    names: set
    columns: Optional[set]  # None: unknown (a relation dbguard does not know)


@dataclass
class _Res:
    """What a boolean expression restricts, per column of each scope level."""

    false: bool = False
    pins: dict = field(default_factory=dict)  # (level, column) -> kind
    corr: set = field(default_factory=set)  # {((level, col), (level, col))} equalities across levels
    lv: Optional[frozenset] = None  # levels whose rows are restricted to the caller (default: pinned ones)

    def levels(self) -> frozenset:
        return self.lv if self.lv is not None else frozenset(k[0] for k in self.pins)

    @staticmethod
    def both(a: "_Res", b: "_Res") -> "_Res":  # AND
        pins = dict(a.pins)
        for k, v in b.pins.items():
            pins[k] = max(pins.get(k, 0), v)
        return _Res(a.false or b.false, pins, a.corr | b.corr, a.levels() | b.levels())

    @staticmethod
    def either(parts: list["_Res"]) -> "_Res":  # OR
        live = [p for p in parts if not p.false]
        if not live:
            return _Res(false=True)
        pins = dict(live[0].pins)
        corr = set(live[0].corr)
        levels = live[0].levels()
        for p in live[1:]:
            pins = {k: min(v, p.pins[k]) for k, v in pins.items() if k in p.pins}
            corr &= p.corr
            levels &= p.levels()  # every branch restricts the rows, not necessarily on the same column
        return _Res(False, pins, corr, levels)


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ExprAnalysis:
    """Everything the rules need to know about one policy expression."""

    text: Optional[str]
    parsed: bool
    error: Optional[str] = None
    always_true: bool = False
    always_false: bool = False
    level: str = NONE  # FALSE | TENANT | INDIRECT | NONE (see module docstring)
    unsafe_casts: tuple[str, ...] = ()
    per_row_calls: tuple[str, ...] = ()
    user_metadata: tuple[str, ...] = ()

    @property
    def pins_tenant(self) -> bool:
        return self.level in (TENANT, FALSE)

    @property
    def restricts(self) -> bool:
        return self.level != NONE

    def describe(self) -> str:
        if not self.parsed:
            return f"could not be parsed ({self.error}); treated as not restricting rows"
        if self.always_true:
            return "is always true"
        if self.always_false:
            return "is never true"
        return {TENANT: "pins the tenant column to the tenant context",
                INDIRECT: "restricts rows to the caller without comparing the tenant column with the tenant context",
                NONE: "does not compare the tenant column with the tenant context"}[self.level]


# --------------------------------------------------------------------------- the analyzer
class Analyzer:
    """Policy analysis bound to a snapshot (for function bodies and table columns) and a tenant model.

    Create one per audit; it caches parsed function bodies and per-policy results.
    """

    def __init__(self, snapshot: Optional[Snapshot] = None, config: Optional[Config] = None,
                 tenant: Optional[TenantModel] = None):
        self.snapshot = snapshot
        self.config = config or Config()
        self.tenant = tenant or self.config.tenant
        self.platform_schemas = set(self.config.exclude_schemas)
        self._funcs: dict[tuple[str, str], list[Function]] = {}
        self._funcs_by_name: dict[str, list[Function]] = {}
        for f in (snapshot.functions if snapshot else ()):
            self._funcs.setdefault((f.schema, f.name), []).append(f)
            self._funcs_by_name.setdefault(f.name, []).append(f)
        self._tables: dict[tuple[str, str], Table] = {}
        self._tables_by_name: dict[str, list[Table]] = {}
        for t in (snapshot.tables if snapshot else ()):
            self._tables[(t.schema, t.name)] = t
            self._tables_by_name.setdefault(t.name, []).append(t)
        self._context_funcs = set()
        for name in self.tenant.context_functions:
            self._context_funcs.add(tuple(name.split(".", 1)) if "." in name else (None, name))
        self.tenant_claims = set(TENANT_CLAIMS) | {self.tenant.jwt_claim.lower(), self.tenant.column.lower()}
        self._bodies: dict[tuple, Optional[list]] = {}
        self._stack: list[tuple] = []
        self._bypass_roles = {r.name for r in (snapshot.roles if snapshot else ()) if r.superuser or r.bypassrls} | {
            "service_role", "supabase_admin"}
        self._definer: list[bool] = []
        self._isolated: dict[str, bool] = {}
        self._cache: dict[tuple, ExprAnalysis] = {}
        self._top_names: frozenset = frozenset()
        self._fold_memo: dict[int, tuple[Any, Any]] = {}
        self._used_table = False  # did the last analysis depend on the policy's table (names, columns)?

    # ------------------------------------------------------------------ public API
    def analyze(self, text: Optional[str], *, table: Optional[Table] = None,
                tenant_column: Optional[str] = None) -> ExprAnalysis:
        generic = (text, tenant_column)
        hit = self._cache.get(generic)
        if hit is not None:
            return hit
        key = (text, table.qualified if table else None, tenant_column)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        self._used_table = False
        result = self._analyze(text, table, tenant_column)
        # Most policies read the same whatever table they are on; share those results.
        self._cache[key if self._used_table else generic] = result
        return result

    def analyze_policy(self, table: Table, policy: Policy, tenant_column: Optional[str]
                       ) -> tuple[Optional[ExprAnalysis], Optional[ExprAnalysis]]:
        """(USING analysis or None, WITH CHECK analysis or None) of a policy of ``table``."""
        using = self.analyze(policy.using, table=table, tenant_column=tenant_column) if policy.using else None
        check = (self.analyze(policy.with_check, table=table, tenant_column=tenant_column)
                 if policy.with_check else None)
        return using, check

    def _analyze(self, text, table, tenant_column) -> ExprAnalysis:
        if text is None:
            return ExprAnalysis(text=None, parsed=False, error="no expression")
        try:
            node = parse_expression(text)
        except PolicyParseError as exc:
            return ExprAnalysis(text=text, parsed=False, error=str(exc).splitlines()[0][:200])
        self._top_names = frozenset({table.name}) if table is not None else frozenset()
        self._fold_memo = {}
        try:
            value = self.fold(node)
            scopes = [self._top_scope(table)]
            res = self.restriction(node, scopes)
            level = self._level(res, tenant_column)
            nodes = list(_walk(node))
            called = self.functions_called(node, nodes)
            return ExprAnalysis(
                text=text, parsed=True, always_true=value is True, always_false=value is False or value is NULL,
                level=FALSE if value is False or value is NULL else (NONE if value is True else level),
                unsafe_casts=tuple(self.unsafe_casts(node, called, nodes)),
                per_row_calls=tuple(self.per_row_calls(node)),
                user_metadata=tuple(self.user_metadata(node, called, nodes)))
        except RecursionError:
            return ExprAnalysis(text=text, parsed=False, error="expression nested too deeply")
        except Exception as exc:  # an unexpected tree shape must never crash the audit
            return ExprAnalysis(text=text, parsed=False, error=f"analysis failed: {exc.__class__.__name__}")

    def _level(self, res: _Res, tenant_column: Optional[str]) -> str:
        if res.false:
            return FALSE
        top = {col: kind for (lvl, col), kind in res.pins.items() if lvl == 0}
        if tenant_column is not None and tenant_column in top:
            # the tenant column equals a value the session cannot choose (the tenant context, or the
            # caller's identity where tenants are principals: tenant_id = current_user, = auth.uid())
            return TENANT
        if top or 0 in res.levels():
            return INDIRECT
        return NONE

    # ------------------------------------------------------------------ lookups
    def _table_for(self, schema: Optional[str], name: str) -> Optional[Table]:
        if schema:
            return self._tables.get((schema, name))
        if ("public", name) in self._tables:
            return self._tables[("public", name)]
        found = self._tables_by_name.get(name, [])
        return found[0] if len(found) == 1 else None

    def _function_for(self, schema: Optional[str], name: str, nargs: int) -> Optional[Function]:
        cands = self._funcs.get((schema, name), []) if schema else (
            self._funcs.get(("public", name)) or self._funcs_by_name.get(name, []))
        cands = [f for f in cands if _arg_count(f.arguments) == nargs] or (cands if len(cands) == 1 else [])
        return cands[0] if cands else None

    def _is_context_function(self, schema: Optional[str], name: str) -> bool:
        return (schema, name) in self._context_funcs or (None, name) in self._context_funcs or (
            schema is None and any(n == name for _, n in self._context_funcs))

    # ------------------------------------------------------------------ constant folding
    def fold(self, node: Any, depth: int = 0) -> Any:
        """The constant value of an expression: True/False/int/float/str/NULL, or UNKNOWN."""
        if depth > 60:
            return UNKNOWN
        hit = self._fold_memo.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        value = self._fold(node, depth)
        self._fold_memo[id(node)] = (node, value)  # the node is kept alive, so its id stays unique
        return value

    def _fold(self, node: Any, depth: int) -> Any:
        t, b = _ntype(node)
        d = depth + 1
        if t == "A_Const":
            if b.get("isnull"):
                return NULL
            if "boolval" in b:
                return bool((b["boolval"] or {}).get("boolval", False))
            if "ival" in b:
                return int((b["ival"] or {}).get("ival", 0))
            if "fval" in b:
                try:
                    return float((b["fval"] or {}).get("fval", "0"))
                except ValueError:
                    return UNKNOWN
            if "sval" in b:
                return (b["sval"] or {}).get("sval", "")
            return UNKNOWN
        if t == "TypeCast":
            return _cast(self.fold(b.get("arg"), d), _type_name(b))
        if t == "BoolExpr":
            vals = [self.fold(a, d) for a in b.get("args", [])]
            op = b.get("boolop")
            if op == "NOT_EXPR":
                v = vals[0] if vals else UNKNOWN
                return (not v) if isinstance(v, bool) else v
            if op == "AND_EXPR":
                if any(v is False for v in vals):
                    return False
                if all(v is True for v in vals):
                    return True
                return NULL if all(v is True or v is NULL for v in vals) else UNKNOWN
            if op == "OR_EXPR":
                if any(v is True for v in vals):
                    return True
                if all(v is False for v in vals):
                    return False
                return NULL if all(v is False or v is NULL for v in vals) else UNKNOWN
            return UNKNOWN
        if t == "A_Expr":
            return self._fold_aexpr(b, d)
        if t == "NullTest":
            v = self.fold(b.get("arg"), d)
            if v is UNKNOWN:
                return UNKNOWN
            isnull = v is NULL
            return isnull if b.get("nulltesttype") == "IS_NULL" else not isnull
        if t == "BooleanTest":
            v = self.fold(b.get("arg"), d)
            if v is UNKNOWN or not (isinstance(v, bool) or v is NULL):
                return UNKNOWN
            return {"IS_TRUE": v is True, "IS_NOT_TRUE": v is not True, "IS_FALSE": v is False,
                    "IS_NOT_FALSE": v is not False, "IS_UNKNOWN": v is NULL,
                    "IS_NOT_UNKNOWN": v is not NULL}.get(b.get("booltesttype"), UNKNOWN)
        if t == "CoalesceExpr":
            for a in b.get("args", []):
                v = self.fold(a, d)
                if v is NULL:
                    continue
                return v
            return NULL
        if t == "SubLink":
            sel = _ntype(b.get("subselect"))[1]
            simple = (sel and not sel.get("fromClause") and not sel.get("groupClause") and not sel.get("havingClause")
                      and sel.get("op", "SETOP_NONE") == "SETOP_NONE" and not sel.get("limitCount")
                      and len(sel.get("targetList", [])) == 1)
            kind = b.get("subLinkType")
            if not simple:
                return UNKNOWN
            where = self.fold(sel["whereClause"], d) if sel.get("whereClause") else True
            if kind == "EXISTS_SUBLINK":
                return True if where is True else (False if where is False or where is NULL else UNKNOWN)
            if kind == "EXPR_SUBLINK":
                if where is True:
                    return self.fold(_ntype(sel["targetList"][0])[1].get("val"), d)
                return NULL if where is False or where is NULL else UNKNOWN
            return UNKNOWN
        if t == "CaseExpr":
            return self._fold_case(b, d)
        if t == "FuncCall":
            return self._fold_func(b, d)
        return UNKNOWN

    def _fold_aexpr(self, b: dict, d: int) -> Any:
        kind = b.get("kind")
        op = "".join(_names(b.get("name")))
        if kind == "AEXPR_NULLIF":
            lv, rv = self.fold(b.get("lexpr"), d), self.fold(b.get("rexpr"), d)
            if lv is UNKNOWN or rv is UNKNOWN:
                return UNKNOWN
            return NULL if _compare("=", lv, rv) is True else lv
        if kind in ("AEXPR_OP", "AEXPR_DISTINCT", "AEXPR_NOT_DISTINCT"):
            if "lexpr" not in b:  # prefix operator
                v = self.fold(b.get("rexpr"), d)
                if op == "-" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    return -v
                return UNKNOWN if v is not NULL else NULL
            lv, rv = self.fold(b.get("lexpr"), d), self.fold(b.get("rexpr"), d)
            if kind == "AEXPR_OP":
                res = _compare(op, lv, rv)
                if res is UNKNOWN and op in ("=", "<=", ">=") and self._same(b.get("lexpr"), b.get("rexpr")):
                    return True  # x = x: true for every row where x is not NULL; restricts nothing
                if res is UNKNOWN and op in ("<>", "!=", "<", ">") and self._same(b.get("lexpr"), b.get("rexpr")):
                    return False
                return res
            # IS [NOT] DISTINCT FROM
            if lv is not UNKNOWN and rv is not UNKNOWN:
                same = (lv is NULL and rv is NULL) or (lv is not NULL and rv is not NULL and _compare("=", lv, rv) is True)
                return same if kind == "AEXPR_NOT_DISTINCT" else not same
            if self._same(b.get("lexpr"), b.get("rexpr")):
                return kind == "AEXPR_NOT_DISTINCT"
            return UNKNOWN
        if kind in ("AEXPR_OP_ANY", "AEXPR_OP_ALL"):
            rt, rb = _ntype(b.get("rexpr"))
            while rt == "TypeCast":
                rt, rb = _ntype(rb.get("arg"))
            if rt != "A_ArrayExpr":
                return UNKNOWN
            lv = self.fold(b.get("lexpr"), d)
            vals = [_compare(op, lv, self.fold(e, d)) for e in rb.get("elements", [])]
            if kind == "AEXPR_OP_ANY":
                if any(v is True for v in vals):
                    return True
                if vals and all(v is False for v in vals):
                    return False
            else:
                if any(v is False for v in vals):
                    return False
                if all(v is True for v in vals):
                    return True
            return UNKNOWN
        if kind == "AEXPR_IN":
            lv = self.fold(b.get("lexpr"), d)
            items = _ntype(b.get("rexpr"))[1].get("items", []) if _ntype(b.get("rexpr"))[0] == "List" else []
            positive = op == "="
            if any(self._same(b.get("lexpr"), i) for i in items):
                return True if positive else False
            vals = [self.fold(i, d) for i in items]
            if lv is UNKNOWN or any(v is UNKNOWN for v in vals):
                return UNKNOWN
            if lv is NULL:
                return NULL
            hit = any(_compare("=", lv, v) is True for v in vals)
            if hit:
                return positive
            if any(v is NULL for v in vals):
                return NULL
            return not positive
        return UNKNOWN

    def _fold_case(self, b: dict, d: int) -> Any:
        results = []
        arg = b.get("arg")
        argv = self.fold(arg, d) if arg is not None else None
        for w in b.get("args", []):
            wb = _ntype(w)[1]
            if arg is not None:
                cond = _compare("=", argv, self.fold(wb.get("expr"), d))
            else:
                cond = self.fold(wb.get("expr"), d)
            if cond is True:
                results.append(wb.get("result"))
                break
            if cond is False or cond is NULL:
                continue
            results.append(wb.get("result"))
        else:
            results.append(b.get("defresult"))
        vals = [self.fold(r, d) if r is not None else NULL for r in results]
        if vals and all(v is not UNKNOWN for v in vals) and all(_compare("=", vals[0], v) is True or
                                                                (v is NULL and vals[0] is NULL) for v in vals):
            return vals[0]
        return UNKNOWN

    def _fold_func(self, b: dict, d: int) -> Any:
        schema, name = _func_name(b)
        if b.get("args") or d > 30 or (schema == "auth" and name in AUTH_FUNCS):
            return UNKNOWN
        fn = self._function_for(schema, name, 0)
        if fn is None:
            return UNKNOWN
        exprs = self._returns(fn, [], [])
        if not exprs:
            return UNKNOWN
        vals = [self.fold(e, d + 5) for e in exprs]
        if all(v is not UNKNOWN for v in vals) and all(_compare("=", vals[0], v) is True for v in vals):
            return vals[0]
        return UNKNOWN

    def _same(self, a: Any, b: Any) -> bool:
        """Structurally the same expression (ignoring positions and how a column is qualified at top level)."""
        if a is None or b is None:
            return False
        ta, tb = _ntype(a)[0], _ntype(b)[0]
        if ta != tb:
            return False
        if self._top_names:
            self._used_table = True
        return _canon(a, self._top_names) == _canon(b, self._top_names) and not _volatile(a)

    # ------------------------------------------------------------------ scopes
    def _top_scope(self, table: Optional[Table]) -> _Scope:
        if table is None:
            return _Scope(names=set(), columns=None)
        return _Scope(names={table.name}, columns={c.name for c in table.columns})

    def _scope_for(self, sel: dict) -> _Scope:
        names: set = set()
        columns: Optional[set] = set()

        def add(item):
            nonlocal columns
            t, b = _ntype(item)
            if t == "RangeVar":
                alias = (b.get("alias") or {}).get("aliasname")
                names.add(alias or b.get("relname"))
                tbl = self._table_for(b.get("schemaname"), b.get("relname", ""))
                if tbl is None or columns is None:
                    columns = None
                else:
                    columns |= {c.name for c in tbl.columns}
            elif t == "JoinExpr":
                add(b.get("larg"))
                add(b.get("rarg"))
                alias = (b.get("alias") or {}).get("aliasname")
                if alias:
                    names.add(alias)
            elif t in ("RangeSubselect", "RangeFunction"):
                alias = b.get("alias") or {}
                if alias.get("aliasname"):
                    names.add(alias["aliasname"])
                cols = _names(alias.get("colnames"))
                if cols and columns is not None:
                    columns |= set(cols)
                else:
                    columns = None
            else:
                columns = None

        for item in sel.get("fromClause") or ():
            add(item)
        return _Scope(names=names, columns=columns)

    def _resolve(self, fields: list[str], scopes: list[_Scope]) -> int:
        """The scope level a column reference belongs to."""
        inner = len(scopes) - 1
        if len(fields) >= 2:
            q = fields[-2]
            if q.startswith(_OUTER):
                return int(q[len(_OUTER):])
            for lvl in range(inner, -1, -1):
                if q in scopes[lvl].names:
                    return lvl
            # The names of every subquery's relations are known from its FROM clause, so a qualifier that
            # matches none of them is the policy's own table.
            return 0
        col = fields[0] if fields else ""
        for lvl in range(inner, -1, -1):
            sc = scopes[lvl]
            if lvl == 0 and inner > 0:
                self._used_table = True
            if sc.columns is None or col in sc.columns:
                return lvl
        return inner

    def _column(self, node: Any, scopes: list[_Scope]) -> Optional[tuple[int, str]]:
        """(level, column) when node is a column reference (through casts), else None."""
        t, b = _ntype(node)
        while t == "TypeCast" or (t == "CollateClause"):
            node = b.get("arg")
            t, b = _ntype(node)
        if t != "ColumnRef":
            return None
        fields = _names(b.get("fields"))
        if not fields or fields[-1] == "*":
            return None
        return self._resolve(fields, scopes), fields[-1]

    # ------------------------------------------------------------------ what restricts rows
    def restriction(self, node: Any, scopes: list[_Scope], depth: int = 0) -> _Res:
        if depth > 40:
            return _Res()
        d = depth + 1
        v = self.fold(node)
        if v is True:
            return _Res()
        if v is False or v is NULL:
            return _Res(false=True)
        t, b = _ntype(node)
        if t == "BoolExpr":
            op = b.get("boolop")
            args = b.get("args", [])
            if op == "AND_EXPR":
                res = _Res()
                for a in args:
                    res = _Res.both(res, self.restriction(a, scopes, d))
                return res
            if op == "OR_EXPR":
                return _Res.either([self.restriction(a, scopes, d) for a in args])
            if op == "NOT_EXPR" and args:
                at, ab = _ntype(args[0])
                if at == "A_Expr" and ab.get("kind") == "AEXPR_OP" and "".join(_names(ab.get("name"))) in ("<>", "!="):
                    return self._eq(ab.get("lexpr"), ab.get("rexpr"), scopes, d)
                if at == "A_Expr" and ab.get("kind") == "AEXPR_DISTINCT":
                    return self._eq(ab.get("lexpr"), ab.get("rexpr"), scopes, d)
                if at == "BoolExpr" and ab.get("boolop") == "NOT_EXPR":
                    return self.restriction(ab["args"][0], scopes, d)
            return _Res()
        if t == "BooleanTest":
            if b.get("booltesttype") in ("IS_TRUE", "IS_NOT_FALSE"):
                return self.restriction(b.get("arg"), scopes, d)
            return _Res()
        if t == "A_Expr":
            kind = b.get("kind")
            op = "".join(_names(b.get("name")))
            if kind in ("AEXPR_OP", "AEXPR_NOT_DISTINCT") and op == "=":
                return self._eq(b.get("lexpr"), b.get("rexpr"), scopes, d)
            if kind == "AEXPR_OP_ANY" and op == "=":
                return self._any(b.get("lexpr"), b.get("rexpr"), scopes, d)
            if kind == "AEXPR_OP" and op in ("@>", "<@", "?"):
                # <context> @> <column>, <column> <@ <context>, <jwt list> ? <column>::text
                container, member = (b.get("lexpr"), b.get("rexpr")) if op != "<@" else (b.get("rexpr"), b.get("lexpr"))
                col = self._column_in(member, scopes)
                k = self.ctx_kind(container, scopes, d)
                if col is not None and k is not None and k > 0:
                    return _Res(pins={col: k})
            if kind == "AEXPR_IN" and op == "=":
                col = self._column(b.get("lexpr"), scopes)
                items = _ntype(b.get("rexpr"))[1].get("items", [])
                if col and items:
                    kinds = [self.ctx_kind(i, scopes, d) for i in items]
                    if all(k is not None and k > 0 for k in kinds):
                        return _Res(pins={col: min(kinds)})
                if len(items) == 1:
                    return self._eq(b.get("lexpr"), items[0], scopes, d)
            return _Res()
        if t == "SubLink":
            kind = b.get("subLinkType")
            if kind == "ANY_SUBLINK" and "".join(_names(b.get("operName"))) in ("", "="):
                col = self._column(b.get("testexpr"), scopes)
                if col is not None:
                    k = self.sub_kind(b.get("subselect"), scopes, d)
                    if k is not None and k > 0:
                        return _Res(pins={col: k})
                    return _Res()
                # <context> IN (SELECT member FROM ... WHERE <correlated with the row>)
                k = self.ctx_kind(b.get("testexpr"), scopes, d)
                if k is not None and k > 0:
                    return self._exists(b.get("subselect"), scopes, d, target_kind=k)
                return _Res()
            if kind == "EXISTS_SUBLINK":
                return self._exists(b.get("subselect"), scopes, d)
            if kind == "EXPR_SUBLINK":
                sel = _ntype(b.get("subselect"))[1]
                if sel and not sel.get("fromClause") and len(sel.get("targetList", [])) == 1:
                    inner = scopes + [_Scope(set(), set())]
                    res = self.restriction(_ntype(sel["targetList"][0])[1].get("val"), inner, d)
                    return _Res(res.false, {k: v for k, v in res.pins.items() if k[0] < len(scopes)},
                                {c for c in res.corr if c[0][0] < len(scopes) and c[1][0] < len(scopes)},
                                frozenset(x for x in res.levels() if x < len(scopes)))
            return _Res()
        if t == "FuncCall":
            schema, name = _func_name(b)
            fn = self._function_for(schema, name, len(b.get("args", [])))
            if fn is None or not self._enter(fn):
                return _Res()
            try:
                exprs = self._returns(fn, b.get("args", []), scopes)
                if not exprs:
                    return _Res()
                return _Res.either([self.restriction(e, scopes, d) for e in exprs])
            finally:
                self._leave()
        if t == "CaseExpr" and b.get("arg") is None:
            parts = []
            for w in b.get("args", []):
                wb = _ntype(w)[1]
                parts.append(_Res.both(self.restriction(wb.get("expr"), scopes, d),
                                       self.restriction(wb.get("result"), scopes, d)))
            default = b.get("defresult")
            parts.append(self.restriction(default, scopes, d) if default is not None else _Res(false=True))
            return _Res.either(parts)
        return _Res()

    def _column_in(self, node: Any, scopes: list[_Scope]) -> Optional[tuple[int, str]]:
        """The column a containment test is about: col, col::text, to_jsonb(col), ARRAY[col], ..."""
        col = self._column(node, scopes)
        if col is not None:
            return col
        t, b = _ntype(node)
        while t == "TypeCast":
            t, b = _ntype(b.get("arg"))
        if t == "FuncCall" and len(b.get("args", [])) == 1 and _func_name(b)[1] in (
                "to_jsonb", "to_json", "jsonb_build_array", "json_build_array", "array"):
            return self._column_in(b["args"][0], scopes)
        if t == "A_ArrayExpr" and len(b.get("elements", [])) == 1:
            return self._column_in(b["elements"][0], scopes)
        return None

    def _privileged_only(self, left: Any, right: Any) -> bool:
        """``auth.role() = 'service_role'`` and the like: true only for a role that bypasses row level
        security anyway, so the branch opens nothing to the clients the policy is about."""
        for a, b in ((left, right), (right, left)):
            name = _const_string(b)
            if name is None or name not in self._bypass_roles:
                continue
            t, body = _ntype(a)
            while t == "TypeCast":
                t, body = _ntype(body.get("arg"))
            if t == "SQLValueFunction" and body.get("op") in ("SVFOP_CURRENT_USER", "SVFOP_CURRENT_ROLE",
                                                              "SVFOP_SESSION_USER", "SVFOP_USER"):
                return True
            if t == "FuncCall" and _func_name(body) == ("auth", "role"):
                return True
            if t == "A_Expr":
                jwt, path = self._json_path({t: body}, 0)
                if jwt and path and path[-1] == "role":
                    return True
        return False

    def _eq(self, left: Any, right: Any, scopes: list[_Scope], d: int) -> _Res:
        if self._privileged_only(left, right):
            return _Res(false=True)
        for a, b in ((left, right), (right, left)):
            col = self._column(a, scopes)
            if col is None:
                continue
            kind = self.ctx_kind(b, scopes, d)
            if kind is not None and kind > 0:
                return _Res(pins={col: kind})
            other = self._column(b, scopes)
            if other is not None and other[0] != col[0]:
                return _Res(corr={(col, other)})
        return _Res()

    def _any(self, left: Any, right: Any, scopes: list[_Scope], d: int) -> _Res:
        col = self._column(left, scopes)
        if col is not None:
            rt, rb = _ntype(right)
            if rt == "SubLink" and rb.get("subLinkType") == "ARRAY_SUBLINK":
                k = self.sub_kind(rb.get("subselect"), scopes, d)
            else:
                k = self.ctx_kind(right, scopes, d)
            if k is not None and k > 0:
                return _Res(pins={col: k})
        # <context> = ANY (array_column): the row lists the caller
        arr = self._column(right, scopes)
        if arr is not None:
            k = self.ctx_kind(left, scopes, d)
            if k is not None and k > 0:
                return _Res(pins={arr: IDENTITY})
        return _Res()

    def _exists(self, subselect: Any, scopes: list[_Scope], d: int, target_kind: Optional[int] = None) -> _Res:
        """EXISTS (subquery): restricted when the subquery is pinned to the context and correlated with an
        outer column (a membership check); the correlated outer column is then pinned. With target_kind,
        the form ``<context> IN (SELECT col ...)``: the selected column equals the context."""
        st, sel = _ntype(subselect)
        if st != "SelectStmt" or sel.get("op", "SETOP_NONE") != "SETOP_NONE":
            return _Res()
        inner = scopes + [self._scope_for(sel)]
        lvl = len(inner) - 1
        res = self._select_where(sel, inner, d)
        if res.false:
            return _Res(false=True)
        if target_kind is not None:
            targets = sel.get("targetList", [])
            col = self._column(_ntype(targets[0])[1].get("val"), inner) if len(targets) == 1 else None
            if col is None or col[0] != lvl:
                return _Res()
            res = _Res.both(res, _Res(pins={col: target_kind}))
        restricted = lvl in res.levels() or self._from_isolated(sel)
        out = _Res(pins={k: v for k, v in res.pins.items() if k[0] < lvl})  # outer pins written inside
        levels = {x for x in res.levels() if x < lvl}
        if restricted:
            for a, b in res.corr:
                for mine, theirs in ((a, b), (b, a)):
                    if mine[0] == lvl and theirs[0] < lvl:
                        out.pins[theirs] = max(out.pins.get(theirs, 0), TENANT_KIND)
                        levels.add(theirs[0])
        out.corr = {c for c in res.corr if c[0][0] < lvl and c[1][0] < lvl}
        out.lv = frozenset(levels)
        return out

    def _select_where(self, sel: dict, scopes: list[_Scope], d: int) -> _Res:
        res = self.restriction(sel["whereClause"], scopes, d) if sel.get("whereClause") else _Res()
        for q in _join_quals(sel.get("fromClause") or ()):
            res = _Res.both(res, self.restriction(q, scopes, d))
        return res

    def sub_kind(self, subselect: Any, scopes: list[_Scope], depth: int = 0) -> Optional[int]:
        """Kind of context a set or scalar subquery yields (membership lookups yield tenant ids)."""
        st, sel = _ntype(subselect)
        if st != "SelectStmt" or depth > 40:
            return None
        d = depth + 1
        if sel.get("op", "SETOP_NONE") != "SETOP_NONE":
            kinds = [self.sub_kind(sel.get("larg") and {"SelectStmt": sel["larg"]}, scopes, d),
                     self.sub_kind(sel.get("rarg") and {"SelectStmt": sel["rarg"]}, scopes, d)]
            if all(k is not None and k > 0 for k in kinds):
                return min(kinds)
            return None
        scope = self._scope_for(sel)
        inner = scopes + [scope]
        lvl = len(inner) - 1
        targets = [_ntype(t)[1].get("val") for t in sel.get("targetList", [])]
        if not sel.get("fromClause"):
            if len(targets) == 1:
                k = self.ctx_kind(targets[0], inner, d)
                return k if k is not None and k > 0 else None
            return None
        for item in sel.get("fromClause"):
            it, ib = _ntype(item)
            if it == "RangeFunction":
                for fl in ib.get("functions", []):
                    for f in _ntype(fl)[1].get("items", []):
                        k = self.ctx_kind(f, inner, d) if f else None
                        if k is not None and k > 0:
                            return TENANT_KIND
        res = self._select_where(sel, inner, d)
        if res.false or lvl in res.levels() or self._from_isolated(sel):
            return TENANT_KIND
        if any(k[0] < lvl for k in res.corr):  # correlated: not a context
            return None
        return None

    # ------------------------------------------------------------------ the context
    def ctx_kind(self, node: Any, scopes: list[_Scope], depth: int = 0) -> Optional[int]:
        """IDENTITY or TENANT_KIND when the expression is (derived only from) the caller's context;
        None when it holds no context; _BAD when it depends on a column of an enclosing scope."""
        if node is None or depth > 40:
            return None
        d = depth + 1
        t, b = _ntype(node)
        if t == "ColumnRef":
            return _BAD  # a value of the row (or of an enclosing query's row), not the caller's context
        if t == "A_Const":
            return None
        if t == "SQLValueFunction":
            return IDENTITY if b.get("op") in ("SVFOP_CURRENT_USER", "SVFOP_SESSION_USER", "SVFOP_USER",
                                               "SVFOP_CURRENT_ROLE") else None
        if t == "ParamRef":
            return _BAD
        if t == "FuncCall":
            return self._func_kind(b, scopes, d)
        if t == "A_Expr" and "".join(_names(b.get("name"))) in ("->", "->>", "#>", "#>>"):
            jwt, path = self._json_path(node, d)
            if jwt:
                return self._claim_kind(path[-1] if path else "")
        if t == "SubLink":
            kind = b.get("subLinkType")
            if kind in ("EXPR_SUBLINK", "ARRAY_SUBLINK"):
                return self.sub_kind(b.get("subselect"), scopes, d)
            return None
        # anything else (casts, nullif, coalesce, CASE, operators, ...): derived from its parts
        kind = None
        for c in _typed_children(b):
            kind = _combine(kind, self.ctx_kind(c, scopes, d))
            if kind == _BAD:
                return _BAD
        return kind

    def _func_kind(self, b: dict, scopes: list[_Scope], d: int) -> Optional[int]:
        schema, name = _func_name(b)
        args = b.get("args", [])
        if schema in (None, "pg_catalog") and name == "current_setting":
            guc = _const_string(args[0]) if args else None
            return self._guc_kind(guc) if guc is not None else None
        if schema == "auth" and name in AUTH_IDENTITY_FUNCS:
            return IDENTITY
        if schema == "auth" and name in ("jwt", "role"):
            return None
        if self._is_context_function(schema, name):
            return TENANT_KIND
        fn = self._function_for(schema, name, len(args))
        if fn is not None and fn.schema not in ("pg_catalog",):
            if not self._enter(fn):
                return None
            try:
                exprs = self._returns(fn, args, scopes)
                if not exprs:
                    return None
                kinds = [self.ctx_kind(e, scopes, d) for e in exprs]
                if any(k is None or k == _BAD for k in kinds):
                    return _BAD if any(k == _BAD for k in kinds) else None
                return min(kinds)
            finally:
                self._leave()
        kind = None
        for a in args:
            kind = _combine(kind, self.ctx_kind(a, scopes, d))
        return kind

    def _claim_kind(self, key: str) -> Optional[int]:
        k = key.lower()
        if k in self.tenant_claims:
            return TENANT_KIND
        if k in IDENTITY_CLAIMS:
            return IDENTITY
        if _TENANTISH_GUC.search(k) or self.tenant.column.lower() in k:
            return TENANT_KIND  # tenants, tenant_ids, orgs, ...: the tenants the token lists
        return None

    def _guc_kind(self, guc: str) -> Optional[int]:
        g = guc.strip().lower()
        if g == self.tenant.guc.lower():
            return TENANT_KIND
        if g in ("request.jwt.claims", "request.jwt.claim"):
            return None
        if g.startswith("request.jwt.claim."):
            return self._claim_kind(g[len("request.jwt.claim."):])
        if "." not in g:
            return None  # a built-in setting (search_path, role, ...)
        if _USERISH_GUC.search(g):
            return IDENTITY
        if _TENANTISH_GUC.search(g) or self.tenant.column.lower() in g:
            return TENANT_KIND
        return None

    def _json_path(self, node: Any, d: int) -> tuple[bool, list[str]]:
        """(reads the JWT, keys) for a chain of ->, ->>, #>, #>> over the JWT claims."""
        t, b = _ntype(node)
        if t == "A_Expr" and "".join(_names(b.get("name"))) in ("->", "->>", "#>", "#>>"):
            jwt, path = self._json_path(b.get("lexpr"), d + 1)
            op = "".join(_names(b.get("name")))
            if op in ("->", "->>"):
                key = _const_string(b.get("rexpr"))
                if key is None:
                    v = self.fold(b.get("rexpr"))
                    key = str(v) if isinstance(v, int) else "?"
                return jwt, path + [key]
            return jwt, path + _path_keys(b.get("rexpr"))
        return self._is_jwt(node, d), []

    def _is_jwt(self, node: Any, d: int) -> bool:
        t, b = _ntype(node)
        if d > 40:
            return False
        if t == "TypeCast":
            return self._is_jwt(b.get("arg"), d + 1)
        if t == "A_Expr" and b.get("kind") == "AEXPR_NULLIF":
            return self._is_jwt(b.get("lexpr"), d + 1)
        if t == "CoalesceExpr":
            return any(self._is_jwt(a, d + 1) for a in b.get("args", []))
        if t == "SubLink" and b.get("subLinkType") == "EXPR_SUBLINK":
            sel = _ntype(b.get("subselect"))[1]
            if sel and not sel.get("fromClause") and len(sel.get("targetList", [])) == 1:
                return self._is_jwt(_ntype(sel["targetList"][0])[1].get("val"), d + 1)
            return False
        if t == "FuncCall":
            schema, name = _func_name(b)
            if schema == "auth" and name == "jwt":
                return True
            if schema in (None, "pg_catalog") and name == "current_setting":
                guc = _const_string(b["args"][0]) if b.get("args") else None
                return (guc or "").lower() in ("request.jwt.claims", "request.jwt.claim")
            fn = self._function_for(schema, name, len(b.get("args", [])))
            if fn is not None and not b.get("args") and self._enter(fn):
                try:
                    exprs = self._returns(fn, [], [])
                    return bool(exprs) and all(self._is_jwt(e, d + 1) for e in exprs)
                finally:
                    self._leave()
        return False

    # ------------------------------------------------------------------ function bodies
    def _enter(self, fn: Function) -> bool:
        key = (fn.schema, fn.name, fn.arguments)
        if key in self._stack or len(self._stack) >= 6:
            return False
        self._stack.append(key)
        self._definer.append(fn.security_definer)
        return True

    def _leave(self) -> None:
        self._stack.pop()
        self._definer.pop()

    # ------------------------------------------------------------------ tables isolated by their own RLS
    def _from_isolated(self, sel: dict) -> bool:
        """A subquery whose rows come (through inner joins) from a table that row level security already
        restricts to the caller: policies that read other tables are filtered by those tables' policies,
        unless they run inside a SECURITY DEFINER function (whose owner usually bypasses RLS)."""
        if any(self._definer):
            return False

        def rels(item) -> Iterator[dict]:
            t, b = _ntype(item)
            if t == "RangeVar":
                yield b
            elif t == "JoinExpr":
                jt = b.get("jointype", "JOIN_INNER")
                if jt in ("JOIN_INNER", "JOIN_LEFT"):
                    yield from rels(b.get("larg"))
                if jt in ("JOIN_INNER", "JOIN_RIGHT"):
                    yield from rels(b.get("rarg"))

        for item in sel.get("fromClause") or ():
            for rv in rels(item):
                tbl = self._table_for(rv.get("schemaname"), rv.get("relname", ""))
                if tbl is not None and self.table_isolated(tbl):
                    return True
        return False

    def table_isolated(self, table: Table) -> bool:
        """RLS is enabled and every permissive policy that lets rows be read restricts them to the caller
        (or a restrictive one does): reading the table shows only the caller's rows."""
        key = table.qualified
        if key in self._isolated:
            return self._isolated[key]
        self._isolated[key] = False  # while in progress (policies that read each other)
        result = False
        if table.rls_enabled and self.snapshot is not None:
            from dbguard_pipeline.semantics.tenancy import tenant_column

            tcol = tenant_column(table, self.config)
            bypass = {r.name for r in self.snapshot.roles if r.superuser or r.bypassrls}
            saved = (self._fold_memo, self._used_table, self._top_names)
            try:
                readers = [p for p in table.policies if p.command in ("select", "all")
                           and ("public" in p.roles or not set(p.roles) <= bypass)]
                restrictive = [p for p in readers if not p.permissive and "public" in p.roles and p.using]
                if any(self.analyze(p.using, table=table, tenant_column=tcol).restricts for p in restrictive):
                    result = True
                else:
                    result = True
                    for p in readers:
                        if not p.permissive or not p.using:
                            continue
                        a = self.analyze(p.using, table=table, tenant_column=tcol)
                        if not a.parsed or a.always_true or not a.restricts:
                            result = False
                            break
            finally:
                self._fold_memo, self._used_table, self._top_names = saved
        self._isolated[key] = result
        return result

    def _returns(self, fn: Function, args: list, scopes: list[_Scope]) -> list:
        """The expressions the function returns, with its parameters replaced by the call's arguments."""
        key = (fn.schema, fn.name, fn.arguments)
        if key not in self._bodies:
            self._bodies[key] = _body_returns(fn)
        body = self._bodies[key]
        if not body:
            return []
        exprs, variables = body
        params = _arg_names(fn.arguments)
        if not args and not params and not variables:
            return exprs  # nothing to substitute: the parsed body is shared (never mutated)
        bound = [_bind(a, scopes, self) for a in args]
        # parameters left to their defaults: assume NULL (the usual default of optional filters)
        bound += [{"A_Const": {"isnull": True}}] * max(0, len(params) - len(bound))
        return [_substitute(e, bound, params, fn.name, variables) for e in exprs]

    def functions_called(self, node: Any, nodes: Optional[list] = None) -> list[Function]:
        """User functions (with a body) the expression calls, directly or through other functions."""
        out: list[Function] = []
        seen = set()
        todo = [node]
        while todo and len(seen) < 50:
            cur = todo.pop()
            for t, b in (nodes if nodes is not None and cur is node else _walk(cur)):
                if t != "FuncCall":
                    continue
                schema, name = _func_name(b)
                fn = self._function_for(schema, name, len(b.get("args", [])))
                if fn is None or fn.schema in self.platform_schemas or fn.schema == "pg_catalog":
                    continue
                key = (fn.schema, fn.name, fn.arguments)
                if key in seen:
                    continue
                seen.add(key)
                out.append(fn)
                tree = _body_tree(fn)
                if tree is not None:
                    todo.append(tree)
        return out

    # ------------------------------------------------------------------ detectors
    def unsafe_casts(self, node: Any, called: Optional[list[Function]] = None, nodes: Optional[list] = None
                     ) -> list[str]:
        """current_setting(...) cast to a non-text type without nullif: ''::uuid raises an error once the
        setting has been reset (a pooled connection after SET LOCAL / set_config(..., true))."""
        found = [c for c in _unsafe_casts_in(node, nodes)]
        for fn in (self.functions_called(node) if called is None else called):
            tree = _body_tree(fn)
            if tree is not None:
                inner = _unsafe_casts_in(tree)
            else:
                inner = ["current_setting(...)::" + m for m in _UNSAFE_CAST_RE.findall(fn.body or "")]
            found.extend(f"{c} in {fn.schema}.{fn.name}()" for c in inner)
        return sorted(set(found), key=found.index)

    def per_row_calls(self, node: Any) -> list[str]:
        """auth.uid(), auth.jwt(), auth.role(), auth.email() and current_setting() called outside a scalar
        subquery: PostgreSQL then evaluates them once per row instead of once per query (initplan)."""
        out: list[str] = []

        def visit(n: Any, wrapped: bool) -> None:
            t, b = _ntype(n)
            if t == "SubLink" and b.get("subLinkType") in ("EXPR_SUBLINK", "ARRAY_SUBLINK"):
                visit(b.get("subselect"), True)
                visit(b.get("testexpr"), wrapped)
                return
            if t == "FuncCall" and not wrapped:
                schema, name = _func_name(b)
                if (schema == "auth" and name in AUTH_FUNCS) or (
                        schema in (None, "pg_catalog") and name == "current_setting"):
                    label = f"{schema + '.' if schema == 'auth' else ''}{name}()"
                    if label not in out:
                        out.append(label)
            for c in _iter_children(b if t else n):
                if isinstance(c, list):
                    for x in c:
                        visit(x, wrapped)
                else:
                    visit(c, wrapped)

        visit(node, False)
        return out

    def user_metadata(self, node: Any, called: Optional[list[Function]] = None, nodes: Optional[list] = None
                      ) -> list[str]:
        """References to user-editable metadata: the JWT's user_metadata claim or auth.users'
        raw_user_meta_data column, in the policy or in a function it calls."""
        found = list(_user_metadata_in(node, nodes))
        for fn in (self.functions_called(node) if called is None else called):
            tree = _body_tree(fn)
            inner = list(_user_metadata_in(tree)) if tree is not None else (
                ["user_metadata"] if re.search(r"user_metadata|raw_user_meta_data", fn.body or "", re.I) else [])
            found.extend(f"{c} in {fn.schema}.{fn.name}()" for c in inner)
        return sorted(set(found), key=found.index)


# --------------------------------------------------------------------------- helpers (module level)
def _combine(a: Optional[int], b: Optional[int]) -> Optional[int]:
    if a == _BAD or b == _BAD:
        return _BAD
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _cast(v: Any, type_name: str) -> Any:
    if v is UNKNOWN or v is NULL:
        return v
    tn = type_name.lower()
    if tn in ("bool", "boolean"):
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            return v != 0
        if isinstance(v, str):
            s = v.strip().lower()
            if s in ("t", "true", "y", "yes", "on", "1"):
                return True
            if s in ("f", "false", "n", "no", "off", "0"):
                return False
        return UNKNOWN
    if tn in ("int", "int2", "int4", "int8", "integer", "bigint", "smallint"):
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, int):
            return v
        if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
            return int(v)
        if isinstance(v, float):
            return int(round(v))
        return UNKNOWN
    if tn in TEXT_TYPES:
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)
    if tn in ("numeric", "decimal", "float4", "float8", "real", "double precision"):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return UNKNOWN
        return UNKNOWN
    # other types (uuid, interval, dates, json, ...): their literals do not compare as text
    return UNKNOWN


def _compare(op: str, a: Any, b: Any) -> Any:
    if a is UNKNOWN or b is UNKNOWN:
        return UNKNOWN
    if a is NULL or b is NULL:
        return NULL
    num = (int, float)
    if isinstance(a, bool) != isinstance(b, bool):
        return UNKNOWN
    if not (isinstance(a, bool) or (isinstance(a, num) and isinstance(b, num)) or (isinstance(a, str) and isinstance(b, str))):
        # a string literal compared with a number is coerced by PostgreSQL
        if isinstance(a, str) and isinstance(b, num) and re.fullmatch(r"\s*[+-]?\d+(\.\d*)?\s*", a):
            a = float(a)
        elif isinstance(b, str) and isinstance(a, num) and re.fullmatch(r"\s*[+-]?\d+(\.\d*)?\s*", b):
            b = float(b)
        else:
            return UNKNOWN
    try:
        return {"=": a == b, "<>": a != b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}.get(op, UNKNOWN)
    except TypeError:
        return UNKNOWN


_VOLATILE = frozenset({"random", "gen_random_uuid", "uuid_generate_v4", "clock_timestamp", "nextval", "timeofday"})


def _volatile(node: Any) -> bool:
    for t, b in _walk(node):
        if t == "FuncCall" and _func_name(b)[1] in _VOLATILE:
            return True
    return False


def _canon(node: Any, top_names: frozenset = frozenset()) -> Any:
    """Structure for comparing expressions: no positions; a column qualified with the policy's own table
    equals the unqualified one."""
    t, b = _ntype(node)
    if t == "ColumnRef":
        fields = _names(b.get("fields"))
        if len(fields) >= 2 and fields[-2] in top_names:
            fields = fields[-1:]
        return ("col", tuple(fields))
    if t is not None:
        return (t, tuple(sorted((k, _canon(v, top_names)) for k, v in b.items()
                                if k not in ("location", "list_start", "list_end"))))
    if isinstance(node, list):
        return tuple(_canon(v, top_names) for v in node)
    if isinstance(node, dict):
        return tuple(sorted((k, _canon(v, top_names)) for k, v in node.items() if k != "location"))
    return node


def _path_keys(node: Any) -> list[str]:
    s = _const_string(node)
    if s is not None:
        s = s.strip()
        if s.startswith("{") and s.endswith("}"):
            return [p.strip().strip('"') for p in s[1:-1].split(",") if p.strip()]
        return [s]
    t, b = _ntype(node)
    while t == "TypeCast":
        t, b = _ntype(b.get("arg"))
    if t == "A_ArrayExpr":
        return [_const_string(e) or "?" for e in b.get("elements", [])]
    return ["?"]


def _join_quals(items: Iterable) -> list:
    out = []
    for item in items:
        t, b = _ntype(item)
        if t == "JoinExpr":
            if b.get("jointype", "JOIN_INNER") == "JOIN_INNER" and b.get("quals") is not None:
                out.append(b["quals"])
            out.extend(_join_quals([b.get("larg"), b.get("rarg")]))
    return out


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
    names: list[Optional[str]] = []
    for p in _split_args(arguments):
        p = re.sub(r"(?i)^(in|inout|variadic)\s+", "", p)
        m = re.match(r'^("(?:[^"]|"")+"|[^\s"]+)\s+(.+)$', p)
        if m and m.group(1).lower() not in _TYPE_STARTS:
            n = m.group(1)
            names.append(n[1:-1].replace('""', '"') if n.startswith('"') else n.lower())
        else:
            names.append(None)
    return names


def _bind(arg: Any, scopes: list[_Scope], analyzer: Analyzer) -> Any:
    """Rewrite the column references of a call argument so that they keep pointing at their scope once
    the argument is placed inside the function body."""
    t, b = _ntype(arg)
    if t == "ColumnRef":
        fields = _names(b.get("fields"))
        if fields and fields[-1] != "*":
            lvl = analyzer._resolve(fields, scopes) if scopes else 0
            return {"ColumnRef": {"fields": [{"String": {"sval": f"{_OUTER}{lvl}"}}, {"String": {"sval": fields[-1]}}]}}
        return arg
    if t == "SubLink":
        return arg
    if t is not None:
        return {t: {k: _bind(v, scopes, analyzer) for k, v in b.items()}}
    if isinstance(arg, list):
        return [_bind(v, scopes, analyzer) for v in arg]
    if isinstance(arg, dict):
        return {k: _bind(v, scopes, analyzer) for k, v in arg.items()}
    return arg


def _substitute(node: Any, args: list, params: list[Optional[str]], fname: str, variables: dict) -> Any:
    t, b = _ntype(node)
    if t == "ParamRef":
        n = b.get("number", 0)
        if 1 <= n <= len(args):
            return args[n - 1]
        return node
    if t == "ColumnRef":
        fields = _names(b.get("fields"))
        name = None
        if len(fields) == 1:
            name = fields[0]
        elif len(fields) == 2 and fields[0] == fname:
            name = fields[1]
        if name is not None:
            if name in params:
                i = params.index(name)
                if i < len(args):
                    return args[i]
            if name in variables and len(fields) == 1:
                return _substitute(variables[name], args, params, fname, {})
        return node
    if t is not None:
        return {t: {k: _substitute(v, args, params, fname, variables) for k, v in b.items()}}
    if isinstance(node, list):
        return [_substitute(v, args, params, fname, variables) for v in node]
    if isinstance(node, dict):
        return {k: _substitute(v, args, params, fname, variables) for k, v in node.items()}
    return node


def _select_as_expr(sel: dict) -> Any:
    """A SELECT as the expression it yields: its target when it reads no table, else a scalar subquery."""
    targets = sel.get("targetList", [])
    if (not sel.get("fromClause") and not sel.get("whereClause") and len(targets) == 1
            and sel.get("op", "SETOP_NONE") == "SETOP_NONE"):
        return _ntype(targets[0])[1].get("val")
    return {"SubLink": {"subLinkType": "EXPR_SUBLINK", "subselect": {"SelectStmt": sel}}}


@lru_cache(maxsize=2048)
def _body_returns_cached(language: str, body: str, arguments: str, returns: str) -> Optional[tuple]:
    lang = (language or "").lower()
    if not body or not body.strip():
        return None
    if lang == "sql":
        try:
            tree = _parse_json(body)
        except PolicyParseError:
            return None
        stmts = [s.get("stmt", {}) for s in tree.get("stmts", [])]
        sels = [s["SelectStmt"] for s in stmts if "SelectStmt" in s]
        if not sels:
            return None
        return ([_select_as_expr(sels[-1])], {})
    if lang == "plpgsql":
        tag = "$dbguard_body$"
        if tag in body:
            return None
        src = f"CREATE FUNCTION dbguard_f({arguments}) RETURNS {returns or 'void'} LANGUAGE plpgsql AS {tag}{body}{tag}"
        try:
            from pglast.parser import parse_plpgsql_json

            fn = json.loads(parse_plpgsql_json(src))
        except Exception:
            return None
        exprs: list = []
        variables: dict = {}
        datums = []
        for f in fn if isinstance(fn, list) else [fn]:
            datums = _ntype(f)[1].get("datums", [])

        def refname(varno):
            if 0 <= varno < len(datums):
                return _ntype(datums[varno])[1].get("refname")
            return None

        def expr_of(q: Optional[str], mode_select: bool) -> Any:
            if not q:
                return None
            try:
                tree = _parse_json(q if mode_select else f"SELECT {q}")
            except PolicyParseError:
                return None
            stmts = tree.get("stmts", [])
            if len(stmts) != 1 or "SelectStmt" not in stmts[0].get("stmt", {}):
                return None
            return _select_as_expr(stmts[0]["stmt"]["SelectStmt"])

        for t, b in _walk(fn):
            if t == "PLpgSQL_stmt_return" and b.get("expr"):
                e = expr_of(_ntype(b["expr"])[1].get("query"), False)
                if e is not None:
                    exprs.append(e)
            elif t == "PLpgSQL_stmt_return_query" and b.get("query"):
                e = expr_of(_ntype(b["query"])[1].get("query"), True)
                if e is not None:
                    exprs.append(e)
            elif t == "PLpgSQL_stmt_assign" and b.get("expr"):
                name = refname(b.get("varno", -1))
                e = expr_of(_ntype(b["expr"])[1].get("query"), False)
                if name and e is not None:
                    variables[name] = e
            elif t == "PLpgSQL_stmt_execsql" and b.get("into") and b.get("sqlstmt"):
                tt, target = _ntype(b.get("target"))
                names = [f.get("name") for f in target.get("fields", [])] if tt == "PLpgSQL_row" else (
                    [target.get("refname")] if tt == "PLpgSQL_var" else [])
                e = expr_of(_ntype(b["sqlstmt"])[1].get("query"), True)
                if len(names) == 1 and names[0] and e is not None:
                    variables[names[0]] = e
        # "RETURN v;" of a plain variable: libpg_query keeps only its number, so read the name from the text
        for name in re.findall(r"(?is)\breturn\s+([a-z_][a-z0-9_]*)\s*;", body):
            if name.lower() in variables and name.lower() not in ("next", "query", "null", "true", "false"):
                exprs.append(variables[name.lower()])
        return (exprs, variables) if exprs else None
    return None


def _body_returns(fn: Function) -> Optional[tuple]:
    return _body_returns_cached(fn.language, fn.body or "", fn.arguments or "", fn.returns or "")


@lru_cache(maxsize=2048)
def _body_tree_cached(language: str, body: str, arguments: str, returns: str) -> Optional[Any]:
    if (language or "").lower() == "sql":
        try:
            return _parse_json(body)
        except PolicyParseError:
            return None
    if (language or "").lower() == "plpgsql":
        r = _body_returns_cached(language, body, arguments, returns)
        if r is None:
            return None
        exprs, variables = r
        return [exprs, list(variables.values())]
    return None


def _body_tree(fn: Function) -> Optional[Any]:
    if not fn.body:
        return None
    return _body_tree_cached(fn.language, fn.body, fn.arguments or "", fn.returns or "")


_UNSAFE_CAST_RE = re.compile(r"current_setting\s*\([^()]*\)\s*::\s*(?!text\b|varchar\b|character varying\b|name\b)"
                             r"([a-z_][a-z0-9_]*)", re.I)


def _unsafe_casts_in(node: Any, nodes: Optional[list] = None) -> list[str]:
    out = []
    for t, b in (nodes if nodes is not None else _walk(node)):
        if t != "TypeCast":
            continue
        target = _type_name(b).lower()
        if target in TEXT_TYPES:
            continue
        inner = b.get("arg")
        it, ib = _ntype(inner)
        while it == "TypeCast" and _type_name(ib).lower() in TEXT_TYPES:
            inner = ib.get("arg")
            it, ib = _ntype(inner)
        if it == "FuncCall":
            schema, name = _func_name(ib)
            if schema in (None, "pg_catalog") and name == "current_setting":
                out.append(f"{snippet(inner)}::{_type_name(b)}")
    return out


def _user_metadata_in(node: Any, nodes: Optional[list] = None) -> Iterator[str]:
    for t, b in (nodes if nodes is not None else _walk(node)):
        if t == "A_Expr" and "".join(_names(b.get("name"))) in ("->", "->>", "#>", "#>>"):
            keys = _path_keys(b.get("rexpr"))
            if any(k.lower() in ("user_metadata", "raw_user_meta_data") for k in keys):
                yield f"{snippet(b.get('lexpr'), 60)} {''.join(_names(b.get('name')))} 'user_metadata'"
        elif t == "ColumnRef":
            fields = _names(b.get("fields"))
            if fields and fields[-1].lower() in ("raw_user_meta_data",):
                yield ".".join(f for f in fields if not f.startswith(_OUTER))


# --------------------------------------------------------------------------- convenience functions
def _as_node(expr: Any) -> Any:
    return parse_expression(expr) if isinstance(expr, str) else expr


def always_true(expr: Any, snapshot: Optional[Snapshot] = None) -> bool:
    """True when the expression is true for every row (constant folding of trivial predicates).
    Unparsable text is not considered always true."""
    try:
        return Analyzer(snapshot).fold(_as_node(expr)) is True
    except PolicyParseError:
        return False


def pins_tenant(expr: Any, tenant_column: str, tenant_model: Optional[TenantModel] = None,
                snapshot: Optional[Snapshot] = None, *, table: Optional[Table] = None) -> bool:
    """True when every branch of the expression that can be true compares ``tenant_column`` with the
    tenant context (or the expression is never true). Unparsable text does not pin."""
    an = Analyzer(snapshot, tenant=tenant_model or TenantModel())
    if isinstance(expr, str):
        return an.analyze(expr, table=table, tenant_column=tenant_column).pins_tenant
    res = an.restriction(expr, [an._top_scope(table)])
    return an._level(res, tenant_column) in (TENANT, FALSE)


def unsafe_setting_casts(expr: Any, snapshot: Optional[Snapshot] = None) -> list[str]:
    try:
        return Analyzer(snapshot).unsafe_casts(_as_node(expr))
    except PolicyParseError:
        return []


def per_row_calls(expr: Any) -> list[str]:
    try:
        return Analyzer().per_row_calls(_as_node(expr))
    except PolicyParseError:
        return []


def user_metadata_references(expr: Any, snapshot: Optional[Snapshot] = None) -> list[str]:
    try:
        return Analyzer(snapshot).user_metadata(_as_node(expr))
    except PolicyParseError:
        return []


_ANALYZERS: list[tuple[Snapshot, Config, Analyzer]] = []


def analyzer_for(snapshot: Snapshot, config: Config) -> Analyzer:
    """A shared Analyzer for one (snapshot, config) pair, so that the rules of one audit parse each
    policy once."""
    for snap, cfg, an in _ANALYZERS:
        if snap is snapshot and cfg is config:
            return an
    an = Analyzer(snapshot, config)
    _ANALYZERS.append((snapshot, config, an))
    del _ANALYZERS[:-4]
    return an
