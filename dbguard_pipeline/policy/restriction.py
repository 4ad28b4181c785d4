"""What a boolean expression restricts: which columns of which query level it pins to the caller's context.

Levels of restriction, as the rules use them (:class:`Level`):

* ``FALSE``    -- the expression is never true (denies everything);
* ``TENANT``   -- the tenant column is pinned to the tenant context (directly or by membership);
* ``INDIRECT`` -- rows are restricted to the current principal some other way: another column compared
  with the context (``owner_id = auth.uid()``), or a correlated subquery through a parent row that is
  pinned (``exists (select 1 from projects p where p.id = project_id and p.tenant_id = <ctx>)``);
* ``NONE``     -- nothing ties the rows to the caller (``true``, ``auth.role() = 'authenticated'``, ...).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType, BoolTestType, JoinType, SubLinkType

from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.policy.context import (
    ContextKind,
    ContextReader,
    Kind,
    TenantContext,
    is_context,
    is_identity_function,
    is_setting_read,
)
from dbguard_pipeline.policy.fold import NULL
from dbguard_pipeline.policy.inline import Functions
from dbguard_pipeline.policy.parse import (
    Node,
    const_string,
    func_name,
    is_plain,
    operator,
    single_value,
    strip_casts,
    target_values,
)
from dbguard_pipeline.policy.scope import Column, Frame, Pass, Scope, Tables, column, scope_of


class Level(enum.StrEnum):
    FALSE = "false"
    TENANT = "tenant"
    INDIRECT = "indirect"
    NONE = "none"


Correlation = tuple[Column, Column]  # an equality between columns of two query levels


ALT_LIMIT = 32  # alternatives kept per expression; beyond that only the summary (what every branch pins)


@dataclass(frozen=True)
class Restriction:
    """What a boolean expression restricts, per column of each scope level.

    ``pins``, ``corr`` and ``lv`` summarize what every branch that can be true restricts. ``alts``, when not
    empty, keeps the branches themselves (a disjunction of restrictions without alternatives of their own):
    ``buyer_id = <ctx> OR seller_id = <ctx>`` pins no one column in every branch, but every branch pins a
    party of a two-party row (:func:`party_level`)."""

    false: bool = False
    pins: dict[Column, ContextKind] = field(default_factory=dict)  # column -> the context it equals
    corr: frozenset[Correlation] = frozenset()
    lv: Optional[frozenset[int]] = None  # levels whose rows are restricted to the caller (default: pinned ones)
    alts: tuple[Restriction, ...] = ()

    def levels(self) -> frozenset[int]:
        return self.lv if self.lv is not None else frozenset(k[0] for k in self.pins)

    def branches(self) -> tuple[Restriction, ...]:
        """The alternatives that can be true (the restriction itself when it keeps none)."""
        return tuple(a for a in self.alts if not a.false) if self.alts else (() if self.false else (self,))

    @staticmethod
    def both(a: Restriction, b: Restriction) -> Restriction:  # AND
        pins = dict(a.pins)
        for k, v in b.pins.items():
            pins[k] = max(pins.get(k, v), v)
        alts: tuple[Restriction, ...] = ()
        if (a.alts or b.alts) and not (a.false or b.false):
            xs, ys = a.branches(), b.branches()
            if len(xs) * len(ys) <= ALT_LIMIT:
                alts = tuple(Restriction.both(x, y) for x in xs for y in ys)
        return Restriction(a.false or b.false, pins, a.corr | b.corr, a.levels() | b.levels(), alts)

    @staticmethod
    def either(parts: list[Restriction]) -> Restriction:  # OR
        live = [p for p in parts if not p.false]
        if not live:
            return NEVER
        pins = dict(live[0].pins)
        corr = live[0].corr
        levels = live[0].levels()
        for p in live[1:]:
            pins = {k: min(v, p.pins[k]) for k, v in pins.items() if k in p.pins}
            corr &= p.corr
            levels &= p.levels()  # every branch restricts the rows, not necessarily on the same column
        alts: tuple[Restriction, ...] = ()
        if len(live) > 1 or live[0].alts:
            flat = tuple(b for p in live for b in p.branches())
            alts = flat if len(flat) <= ALT_LIMIT else ()
        return Restriction(False, pins, corr, levels, alts)

    def only(self, keep: Callable[[Restriction], Restriction]) -> Restriction:
        """The restriction with ``keep`` applied to the summary and to every alternative."""
        out = keep(self)
        if not self.alts:
            return out
        return Restriction(out.false, out.pins, out.corr, out.lv, tuple(keep(a) for a in self.alts))


NOTHING = Restriction()
NEVER = Restriction(false=True)


def party_level(res: Restriction, parties: tuple[str, ...]) -> tuple[Level, tuple[str, ...]]:
    """How an expression restricts the rows of a two-party table (``parties``: the columns naming each
    tenant of a row): TENANT when every branch that can be true pins one of the party columns to the tenant
    context, else what :func:`level_of` says without a tenant column. Also the party columns some branch pins
    (a policy pinning only ``buyer_id`` lets no seller see its rows)."""
    if res.false:
        return Level.FALSE, ()
    sides: set[str] = set()
    every = True
    for branch in res.branches():
        pinned = {col for (lvl, col) in branch.pins if lvl == 0} & set(parties)
        sides |= pinned
        every = every and bool(pinned)
    if every and sides:
        return Level.TENANT, tuple(c for c in parties if c in sides)
    return level_of(res, None), tuple(c for c in parties if c in sides)


def level_of(res: Restriction, tenant_column: Optional[str]) -> Level:
    if res.false:
        return Level.FALSE
    top = {col: kind for (lvl, col), kind in res.pins.items() if lvl == 0}
    if tenant_column is not None and tenant_column in top:
        # the tenant column equals a value the session cannot choose (the tenant context, or the
        # caller's identity where tenants are principals: tenant_id = current_user, = auth.uid())
        return Level.TENANT
    if top or 0 in res.levels():
        return Level.INDIRECT
    return Level.NONE


def _right(node: ast.A_Expr) -> Optional[Node]:
    """The right operand (None for the list of ``IN (...)``)."""
    return node.rexpr if isinstance(node.rexpr, ast.Node) else None


def _join_quals(from_items: tuple[Node, ...]) -> list[Node]:
    out: list[Node] = []
    for item in from_items:
        if isinstance(item, ast.JoinExpr):
            if item.jointype == JoinType.JOIN_INNER and item.quals is not None:
                out.append(item.quals)
            out.extend(_join_quals(tuple(x for x in (item.larg, item.rarg) if x is not None)))
    return out


def _relations(item: Optional[Node]) -> list[ast.RangeVar]:
    """The tables whose rows a FROM item yields (through inner and outer joins, on their preserved side)."""
    if isinstance(item, ast.RangeVar):
        return [item]
    if isinstance(item, ast.JoinExpr):
        out = []
        if item.jointype in (JoinType.JOIN_INNER, JoinType.JOIN_LEFT):
            out += _relations(item.larg)
        if item.jointype in (JoinType.JOIN_INNER, JoinType.JOIN_RIGHT):
            out += _relations(item.rarg)
        return out
    return []


class Restrictor(ContextReader):
    """Computes the :class:`Restriction` of the expressions of one analysis."""

    def __init__(
        self,
        functions: Functions,
        tenant: TenantContext,
        state: Pass,
        tables: Tables,
        bypass: frozenset[str],
        isolated: Callable[[Table], bool],
    ):
        super().__init__(functions, tenant, state)
        self.tables = tables
        self.bypass = bypass  # role names that bypass row level security
        self.isolated = isolated  # does reading this table show only the caller's rows?

    def col(self, node: Optional[Node], frame: Frame) -> Optional[Column]:
        return column(node, frame, self.state)

    def restriction(self, node: Optional[Node], frame: Frame) -> Restriction:
        if frame.depth > 40:
            return NOTHING
        inner = frame.deeper()
        v = self.fold(node)
        if v is True:
            return NOTHING
        if v is False or v is NULL:
            return NEVER
        if isinstance(node, ast.BoolExpr):
            return self._bool(node, inner)
        if isinstance(node, ast.BooleanTest):
            # where a policy is concerned NULL denies: x IS TRUE is x, x IS FALSE is NOT x. x IS NOT FALSE and
            # x IS NOT TRUE admit the rows where x is NULL (a session without tenant context sees them all)
            if node.booltesttype == BoolTestType.IS_TRUE:
                return self.restriction(node.arg, inner)
            if node.booltesttype == BoolTestType.IS_FALSE and node.arg is not None:
                return self._bool(ast.BoolExpr(boolop=BoolExprType.NOT_EXPR, args=(node.arg,)), inner)
            return NOTHING
        if isinstance(node, ast.CoalesceExpr):
            # true only where one of its arguments is true: coalesce(x, false) is x, coalesce(x, true) is not
            return Restriction.either([self.restriction(a, inner) for a in node.args or ()])
        if isinstance(node, ast.A_Expr):
            return self._a_expr(node, inner)
        if isinstance(node, ast.SubLink):
            return self._sublink(node, inner)
        if isinstance(node, ast.FuncCall):
            fn = self.functions.find_call(node)
            inside = inner.inline(fn) if fn is not None else None
            if fn is None or inside is None:
                return NOTHING
            exprs = self.functions.returns(fn, node.args or (), self.binder(inner))
            if not exprs:
                return NOTHING
            return Restriction.either([self.restriction(e, inside) for e in exprs])
        if isinstance(node, ast.CaseExpr) and node.arg is None:
            parts = [
                Restriction.both(self.restriction(w.expr, inner), self.restriction(w.result, inner))
                for w in node.args or ()
                if isinstance(w, ast.CaseWhen)
            ]
            default = node.defresult
            parts.append(self.restriction(default, inner) if default is not None else NEVER)
            return Restriction.either(parts)
        return NOTHING

    def _bool(self, node: ast.BoolExpr, frame: Frame) -> Restriction:
        args = node.args or ()
        if node.boolop == BoolExprType.AND_EXPR:
            res = NOTHING
            for a in args:
                res = Restriction.both(res, self.restriction(a, frame))
            return res
        if node.boolop == BoolExprType.OR_EXPR:
            return Restriction.either([self.restriction(a, frame) for a in args])
        if node.boolop == BoolExprType.NOT_EXPR and args:
            arg = args[0]
            if isinstance(arg, ast.A_Expr) and (
                (arg.kind == A_Expr_Kind.AEXPR_OP and operator(arg.name) in ("<>", "!="))
                or arg.kind == A_Expr_Kind.AEXPR_DISTINCT
            ):
                return self._eq(arg.lexpr, _right(arg), frame)
            if isinstance(arg, ast.BoolExpr) and arg.boolop == BoolExprType.NOT_EXPR:
                return self.restriction((arg.args or (None,))[0], frame)
        return NOTHING

    def _a_expr(self, node: ast.A_Expr, frame: Frame) -> Restriction:
        kind, op = node.kind, operator(node.name)
        left, right = node.lexpr, _right(node)
        if kind in (A_Expr_Kind.AEXPR_OP, A_Expr_Kind.AEXPR_NOT_DISTINCT) and op == "=":
            return self._eq(left, right, frame)
        if kind == A_Expr_Kind.AEXPR_OP_ANY and op == "=":
            array = strip_casts(right)
            if isinstance(array, ast.A_ArrayExpr) and self._privileged_list(left, array.elements or (), frame):
                return NEVER
            found = self._any(left, right, frame)
            elements = array.elements or () if isinstance(array, ast.A_ArrayExpr) else ()
            if not found.pins and 1 < len(elements) <= ALT_LIMIT:
                # x = ANY (ARRAY[a, b]) (how PostgreSQL prints x IN (a, b)) is x = a OR x = b
                return Restriction.either([self._eq(left, e, frame) for e in elements])
            return found
        if kind == A_Expr_Kind.AEXPR_OP and op in ("@>", "<@", "?"):
            # <context> @> <column>, <column> <@ <context>, <jwt list> ? <column>::text
            container, member = (left, right) if op != "<@" else (right, left)
            col = self._column_in(member, frame)
            k = self.kind(container, frame)
            if col is not None and is_context(k):
                return Restriction(pins={col: k})
        if kind == A_Expr_Kind.AEXPR_IN and op == "=":
            col = self.col(left, frame)
            listed = node.rexpr if isinstance(node.rexpr, tuple) else ()
            if self._privileged_list(left, listed, frame):
                return NEVER
            if col and listed:
                kinds = [self.kind(i, frame) for i in listed]
                pinned = [k for k in kinds if is_context(k)]
                if len(pinned) == len(kinds):
                    return Restriction(pins={col: min(pinned)})
            if len(listed) == 1:
                return self._eq(left, listed[0], frame)
            if len(listed) <= ALT_LIMIT:
                # x IN (a, b) is x = a OR x = b: <ctx> IN (buyer_id, seller_id) pins one party in each branch
                return Restriction.either([self._eq(left, item, frame) for item in listed])
        return NOTHING

    def _sublink(self, node: ast.SubLink, frame: Frame) -> Restriction:
        kind = node.subLinkType
        if kind == SubLinkType.ANY_SUBLINK and operator(node.operName) in ("", "="):
            col = self.col(node.testexpr, frame)
            if col is not None:
                k = self.subquery_kind(node.subselect, frame)
                return Restriction(pins={col: k}) if is_context(k) else NOTHING
            # <context> IN (SELECT member FROM ... WHERE <correlated with the row>)
            k = self.kind(node.testexpr, frame)
            if is_context(k):
                return self._exists(node.subselect, frame, target_kind=k)
            return NOTHING
        if kind == SubLinkType.EXISTS_SUBLINK:
            return self._exists(node.subselect, frame)
        if kind == SubLinkType.EXPR_SUBLINK:
            sel = node.subselect
            if isinstance(sel, ast.SelectStmt) and not sel.fromClause and len(sel.targetList or ()) == 1:
                n = len(frame.scopes)
                res = self.restriction(target_values(sel)[0], frame.within(Scope(frozenset(), frozenset())))
                return res.only(
                    lambda r: Restriction(
                        r.false,
                        {k: v for k, v in r.pins.items() if k[0] < n},
                        frozenset(c for c in r.corr if c[0][0] < n and c[1][0] < n),
                        frozenset(x for x in r.levels() if x < n),
                    )
                )
        return NOTHING

    def _column_in(self, node: Optional[Node], frame: Frame) -> Optional[Column]:
        """The column a containment test is about: col, col::text, to_jsonb(col), ARRAY[col], ..."""
        col = self.col(node, frame)
        if col is not None:
            return col
        node = strip_casts(node)
        if (
            isinstance(node, ast.FuncCall)
            and len(node.args or ()) == 1
            and func_name(node)[1] in ("to_jsonb", "to_json", "jsonb_build_array", "json_build_array", "array")
        ):
            return self._column_in(node.args[0] if node.args else None, frame)
        if isinstance(node, ast.A_ArrayExpr) and len(node.elements or ()) == 1:
            return self._column_in(node.elements[0] if node.elements else None, frame)
        return None

    def _privileged_only(self, left: Optional[Node], right: Optional[Node], frame: Frame) -> bool:
        """``auth.role() = 'service_role'`` and the like: true only for a role that bypasses row level
        security anyway, so the branch opens nothing to the clients the policy is about."""
        for a, b in ((left, right), (right, left)):
            name = const_string(b)
            if name is not None and name in self.bypass and self._role_of_caller(a, frame):
                return True
        return False

    def _privileged_list(self, left: Optional[Node], listed: tuple[Node, ...], frame: Frame) -> bool:
        """``auth.role() IN ('service_role', 'supabase_admin')`` / ``= ANY (ARRAY[...])``: every name listed
        bypasses row level security."""
        names = [const_string(i) for i in listed]
        return (
            bool(names) and all(n is not None and n in self.bypass for n in names) and self._role_of_caller(left, frame)
        )

    def _role_of_caller(self, node: Optional[Node], frame: Frame) -> bool:
        """The caller's database role or JWT role claim: ``current_user``, ``auth.role()``,
        ``auth.jwt() ->> 'role'``, ``current_setting('request.jwt.claim.role', true)`` (through casts)."""
        a = strip_casts(node)
        if isinstance(a, ast.SQLValueFunction) and is_identity_function(a):
            return True
        if isinstance(a, ast.FuncCall) and func_name(a) == ("auth", "role"):
            return True
        if isinstance(a, ast.FuncCall) and is_setting_read(a) and a.args:
            return (const_string(a.args[0]) or "").strip().lower() == "request.jwt.claim.role"
        if isinstance(a, ast.A_Expr):
            jwt, path = self.json_path(a, frame.at_depth(0))
            if jwt and path and path[-1] == "role":
                return True
        return False

    def _eq(self, left: Optional[Node], right: Optional[Node], frame: Frame) -> Restriction:
        if self._privileged_only(left, right, frame):
            return NEVER
        for a, b in ((left, right), (right, left)):
            col = self.col(a, frame)
            if col is None:
                continue
            kind = self.kind(b, frame)
            if is_context(kind):
                return Restriction(pins={col: kind})
            other = self.col(b, frame)
            if other is not None and other[0] != col[0]:
                return Restriction(corr=frozenset({(col, other)}))
        return NOTHING

    def _any(self, left: Optional[Node], right: Optional[Node], frame: Frame) -> Restriction:
        col = self.col(left, frame)
        if col is not None:
            if isinstance(right, ast.SubLink) and right.subLinkType == SubLinkType.ARRAY_SUBLINK:
                k = self.subquery_kind(right.subselect, frame)
            else:
                k = self.kind(right, frame)
            if is_context(k):
                return Restriction(pins={col: k})
        # <context> = ANY (array_column): the row lists the caller
        arr = self.col(right, frame)
        if arr is not None:
            k = self.kind(left, frame)
            if is_context(k):
                return Restriction(pins={arr: ContextKind.IDENTITY})
        return NOTHING

    def _exists(self, subselect: Optional[Node], frame: Frame, target_kind: Kind = None) -> Restriction:
        """EXISTS (subquery): restricted when the subquery is pinned to the context and correlated with an
        outer column (a membership check); the correlated outer column is then pinned. With target_kind,
        the form ``<context> IN (SELECT col ...)``: the selected column equals the context."""
        if not isinstance(subselect, ast.SelectStmt) or not is_plain(subselect):
            return NOTHING
        sel = subselect
        inner = frame.within(scope_of(sel, self.tables))
        res = self._select_where(sel, inner)
        if res.false:
            return NEVER
        if res.alts:
            # EXISTS (... WHERE a AND (b OR c)) is EXISTS (... a AND b) OR EXISTS (... a AND c): each branch is
            # judged on its own (a membership row matching either party of a two-party row)
            return Restriction.either([self._exists_branch(sel, inner, b, target_kind) for b in res.branches()])
        return self._exists_branch(sel, inner, res, target_kind)

    def _exists_branch(self, sel: ast.SelectStmt, inner: Frame, res: Restriction, target_kind: Kind) -> Restriction:
        lvl = inner.inner
        if target_kind is not None:
            targets = target_values(sel)
            col = self.col(targets[0], inner) if len(targets) == 1 else None
            if col is None or col[0] != lvl:
                return NOTHING
            res = Restriction.both(res, Restriction(pins={col: target_kind}))
        restricted = lvl in res.levels() or self._from_isolated(sel, inner)
        pins = {k: v for k, v in res.pins.items() if k[0] < lvl}  # outer pins written inside
        levels = {x for x in res.levels() if x < lvl}
        if restricted:
            for a, b in res.corr:
                for mine, theirs in ((a, b), (b, a)):
                    if mine[0] == lvl and theirs[0] < lvl:
                        pins[theirs] = ContextKind.TENANT
                        levels.add(theirs[0])
        return Restriction(
            False, pins, frozenset(c for c in res.corr if c[0][0] < lvl and c[1][0] < lvl), frozenset(levels)
        )

    def _select_where(self, sel: ast.SelectStmt, frame: Frame) -> Restriction:
        res = self.restriction(sel.whereClause, frame) if sel.whereClause is not None else NOTHING
        for q in _join_quals(sel.fromClause or ()):
            res = Restriction.both(res, self.restriction(q, frame))
        return res

    def subquery_kind(self, subselect: Optional[Node], frame: Frame) -> Kind:
        """Kind of context a set or scalar subquery yields (membership lookups yield tenant ids)."""
        if not isinstance(subselect, ast.SelectStmt) or frame.depth > 40:
            return None
        sel = subselect
        deeper = frame.deeper()
        if not is_plain(sel):
            kinds = [self.subquery_kind(sel.larg, deeper), self.subquery_kind(sel.rarg, deeper)]
            pinned = [k for k in kinds if is_context(k)]
            return min(pinned) if len(pinned) == len(kinds) else None
        inner = deeper.within(scope_of(sel, self.tables))
        lvl = inner.inner
        if not sel.fromClause:
            value = single_value(sel)
            if value is not None:
                k = self.kind(value, inner)
                return k if is_context(k) else None
            return None
        for item in sel.fromClause:
            if isinstance(item, ast.RangeFunction):
                for listed in item.functions or ():
                    for f in listed if isinstance(listed, tuple) else (listed,):
                        k = self.kind(f, inner) if isinstance(f, ast.Node) else None
                        if is_context(k):
                            return ContextKind.TENANT
        res = self._select_where(sel, inner)
        if res.false or lvl in res.levels() or self._from_isolated(sel, inner):
            return ContextKind.TENANT
        return None  # correlated with an outer row, or not restricted: not a context

    def _from_isolated(self, sel: ast.SelectStmt, frame: Frame) -> bool:
        """A subquery whose rows come (through inner joins) from a table that row level security already
        restricts to the caller: policies that read other tables are filtered by those tables' policies,
        unless they run inside a SECURITY DEFINER function (whose owner usually bypasses RLS)."""
        if frame.definer:
            return False
        for item in sel.fromClause or ():
            for rv in _relations(item):
                tbl = self.tables.find(rv.schemaname, rv.relname or "")
                if tbl is not None and self.isolated(tbl):
                    return True
        return False
