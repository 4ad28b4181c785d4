"""What a SQL or PL/pgSQL function body reads and writes, and whether each access is tied to the caller: the
question ``security_definer_reads_other_tenants`` asks of a SECURITY DEFINER function.

Every statement of the body (a SQL body's statements; each SQL statement and expression of a PL/pgSQL body,
which libpg_query hands over as text) is parsed by PostgreSQL's parser (pglast). Each relation a query level
names in FROM (through joins, CTEs, subqueries and sublinks), and the target of UPDATE, DELETE and INSERT, is
an :class:`Access`. It is *restricted* when the policy analyzer's :class:`Restrictor` (the one the policies are
judged with: no second judgment) finds its rows tied to the caller's context: a column compared with the
tenant setting, a JWT claim, ``auth.uid()``, a membership subquery or helper keyed by the caller, or an
equality with a column of a relation that is restricted (a join, a correlated subquery). Each relation is a
scope level of its own, so a join pins the relation it names and not its neighbours.

Parameters and PL/pgSQL variables are the caller's choice, not the context: ``org_id = p_org`` restricts
nothing (the access records the parameter in ``by_parameter``). A variable assigned once from the context
(``v := current_setting('app.org_id')::bigint``) is read as that value. The function runs with its owner's
rights, so row level security on the tables a subquery reads restricts nothing either (``Frame.definer``).

A body that does not parse gives None (no answer: the caller stays quiet); dynamic SQL (``EXECUTE``) and the
bodies of the functions it calls are not read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

from pglast import ast
from pglast.enums import A_Expr_Kind, JoinType
from pglast.parser import ParseError, parse_plpgsql_json

from dbguard_pipeline.model.schema import Function, Table
from dbguard_pipeline.policy.analyzer import Analyzer
from dbguard_pipeline.policy.context import is_context
from dbguard_pipeline.policy.inline import _ASSIGNED, _arg_names, _json_body, _json_nodes, _json_type, rebuild
from dbguard_pipeline.policy.normal import normalize
from dbguard_pipeline.policy.parse import (
    Node,
    PolicyParseError,
    children,
    names,
    operator,
    parse_expression,
    parse_statements,
    strip_casts,
    walk,
)
from dbguard_pipeline.policy.restriction import Restriction, Restrictor
from dbguard_pipeline.policy.scope import Frame, Pass, Scope

# Level 0 of every frame: the function itself (a qualifier that names no relation lands here, never on a table).
_FUNCTION_SCOPE = Scope(frozenset(), frozenset())
_MAX_DEPTH = 60


@dataclass(frozen=True)
class Access:
    """One relation a body reads or writes."""

    table: Table
    write: bool  # the target of UPDATE / DELETE / INSERT
    restricted: bool  # its rows are tied to the caller's context
    by_parameter: Optional[str] = None  # the parameter its tenant column is compared with ("p_org", "$1")


def body_accesses(
    fn: Function, analyzer: Analyzer, tenant_column: Callable[[Table], Optional[str]]
) -> Optional[tuple[Access, ...]]:
    """The tables ``fn``'s body reads and writes (in the order the statements name them), or None when the
    body cannot be read (no body, another language, a parse error)."""
    statements = _statements(fn)
    if statements is None:
        return None
    params = _arg_names(fn.arguments or "")
    reader = _Reader(fn, analyzer, tenant_column, params)
    try:
        for stmt, variables in statements:
            reader.statement(_bind(stmt, reader, variables), _BASE, frozenset(), frozenset())
    except RecursionError:
        return None
    return tuple(reader.out)


_BASE: tuple[Scope, ...] = (_FUNCTION_SCOPE,)


# --------------------------------------------------------------------------- the statements of a body
Statements = list[tuple[Node, dict[str, Node]]]  # (statement, PL/pgSQL variables with their one value)


def _statements(fn: Function) -> Optional[Statements]:
    lang = (fn.language or "").lower()
    body = fn.body or ""
    if not body.strip():
        return None
    try:
        if lang == "sql":
            return [(raw.stmt, {}) for raw in parse_statements(body) if raw.stmt is not None]
        if lang == "plpgsql":
            return _plpgsql_statements(fn, body)
    except PolicyParseError:
        return None
    return None


def _plpgsql_statements(fn: Function, body: str) -> Optional[Statements]:
    tag = "$dbguard_body$"
    if tag in body:
        return None
    src = (
        f"CREATE FUNCTION dbguard_f({fn.arguments or ''}) RETURNS {fn.returns or 'void'} "
        f"LANGUAGE plpgsql AS {tag}{body}{tag}"
    )
    try:
        tree = json.loads(parse_plpgsql_json(src))
    except (ParseError, ValueError, RecursionError):
        return None
    datums: list[Any] = []
    for f in tree if isinstance(tree, list) else [tree]:
        datums = _json_body(f).get("datums", []) or []
    declared = [_json_body(d).get("refname") for d in datums]
    pieces: list[Node] = []
    assigned: dict[str, list[Node]] = {}

    def parsed(q: str, mode: int) -> list[Node]:
        if mode == 0:
            return [raw.stmt for raw in parse_statements(q) if raw.stmt is not None]
        if mode in (3, 4, 5):  # an assignment: "v := expr"
            q = _ASSIGNED.sub("", q, count=1)
        return [raw.stmt for raw in parse_statements(f"SELECT {q}") if raw.stmt is not None]

    for kind, node in _json_nodes(tree):
        if kind == "PLpgSQL_expr" and node.get("query"):
            pieces += parsed(node["query"], int(node.get("parseMode", 0) or 0))
        if kind == "PLpgSQL_var" and node.get("default_val") and node.get("refname"):
            q = _json_body(node["default_val"]).get("query")
            if q:
                assigned.setdefault(node["refname"], []).extend(_values(parsed(q, 2)))
        elif kind == "PLpgSQL_stmt_assign" and node.get("expr"):
            varno = node.get("varno", 0)  # the JSON leaves out a zero
            name = declared[varno] if 0 <= varno < len(declared) else None
            q = _json_body(node["expr"]).get("query")
            if name and q:
                assigned.setdefault(name, []).extend(_values(parsed(q, 3)) or [_UNKNOWN])
        elif kind == "PLpgSQL_stmt_execsql" and node.get("into"):
            tt, tb = _json_type(node.get("target"))
            into = (
                [f.get("name") for f in tb.get("fields", [])]
                if tt == "PLpgSQL_row"
                else ([tb.get("refname")] if tt == "PLpgSQL_var" else [])
            )
            q = _json_body(node.get("sqlstmt")).get("query")
            sel = parsed(q, 0) if q else []
            for name in into:
                if name:
                    first = sel[0] if len(into) == 1 and len(sel) == 1 else None
                    value = _as_value(first) if isinstance(first, ast.SelectStmt) else _UNKNOWN
                    assigned.setdefault(name, []).append(value)
    # a variable assigned exactly once holds that value; any other is the caller's (or the body's) choice
    variables = {name: vs[0] for name, vs in assigned.items() if len(vs) == 1 and vs[0] is not _UNKNOWN}
    for name in declared:
        if name and name not in variables:
            variables.setdefault(name, _UNKNOWN)
    return [(p, variables) for p in pieces]


_UNKNOWN = ast.ParamRef(number=0)  # a value the analysis cannot know (a variable, an unnamed argument)


def _values(stmts: list[Node]) -> list[Node]:
    """The value of ``SELECT <expr>`` (an assignment or a default)."""
    if len(stmts) == 1 and isinstance(stmts[0], ast.SelectStmt):
        return [_as_value(stmts[0])]
    return []


def _as_value(sel: ast.SelectStmt) -> Node:
    targets = [t.val for t in sel.targetList or () if isinstance(t, ast.ResTarget)]
    if not sel.fromClause and not sel.whereClause and len(targets) == 1 and not sel.op and targets[0] is not None:
        return targets[0]
    from pglast.enums import SubLinkType

    return ast.SubLink(subLinkType=SubLinkType.EXPR_SUBLINK, subLinkId=0, subselect=sel)


# --------------------------------------------------------------------------- parameters and variables
def _bind(stmt: Node, reader: _Reader, variables: dict[str, Node]) -> Node:
    """The statement with parameters replaced by ``$n`` and variables by their one value (or an unknown
    ``$0``). A bare name that is a column of a table the statement names stays a column (SQL functions
    resolve the column first)."""
    columns: set[str] = set()
    for node in walk(stmt):
        if isinstance(node, ast.RangeVar):
            t = reader.find(node)
            if t is not None:
                columns |= {c.name for c in t.columns}
    values: dict[str, Node] = {}
    for i, p in enumerate(reader.params):
        if p:
            values[p] = ast.ParamRef(number=i + 1)
    for name, v in variables.items():
        if name not in values:
            values[name] = _substitute(v, {k: x for k, x in values.items()}, reader.fn.name, set(), 0)
    return _substitute(stmt, values, reader.fn.name, columns, 0)


def _substitute(node: Node, values: dict[str, Node], fname: str, columns: set[str], depth: int) -> Node:
    if depth > _MAX_DEPTH * 4:
        return node
    if isinstance(node, ast.ColumnRef):
        fields = names(node.fields)
        if len(fields) == 1 and fields[0] in values and fields[0] not in columns:
            return values[fields[0]]
        if len(fields) == 2 and fields[0] == fname and fields[1] in values:
            return values[fields[1]]
        return node
    return rebuild(node, lambda c: _substitute(c, values, fname, columns, depth + 1))


# --------------------------------------------------------------------------- reading the statements
class _Reader:
    def __init__(
        self,
        fn: Function,
        analyzer: Analyzer,
        tenant_column: Callable[[Table], Optional[str]],
        params: list[Optional[str]],
    ):
        self.fn = fn
        self.params = params
        self.tenant_column = tenant_column
        self.tables = analyzer.tables
        self.walker: Restrictor = analyzer.walker(Pass())
        self.path = _search_path(fn)
        self.out: list[Access] = []

    def find(self, rv: ast.RangeVar) -> Optional[Table]:
        name = rv.relname or ""
        if rv.schemaname:
            return self.tables.find(rv.schemaname, name)
        for schema in self.path:
            t = self.tables.find(schema, name)
            if t is not None:
                return t
        return self.tables.find(None, name)

    # ---------------------------------------------------------------- statements
    def statement(
        self, node: Optional[Node], outer: tuple[Scope, ...], done: frozenset[int], ctes: frozenset[str]
    ) -> None:
        if len(outer) > _MAX_DEPTH:
            return
        if isinstance(node, ast.SelectStmt):
            self.select(node, outer, done, ctes)
        elif isinstance(node, (ast.UpdateStmt, ast.DeleteStmt)):
            self.update_or_delete(node, outer, done, ctes)
        elif isinstance(node, ast.InsertStmt):
            self.insert(node, outer, done, ctes)
        elif node is not None:
            # anything else (CALL, a utility statement): only the queries inside it
            self.sublinks(tuple(children(node)), Frame(outer, definer=True), done, ctes)

    def with_clause(
        self, clause: Optional[ast.WithClause], outer: tuple[Scope, ...], done: frozenset[int], ctes: frozenset[str]
    ) -> frozenset[str]:
        if clause is None:
            return ctes
        named = ctes | {c.ctename for c in clause.ctes or () if isinstance(c, ast.CommonTableExpr) and c.ctename}
        for c in clause.ctes or ():
            if isinstance(c, ast.CommonTableExpr):
                self.statement(c.ctequery, outer, done, named)
        return named

    def select(self, sel: ast.SelectStmt, outer: tuple[Scope, ...], done: frozenset[int], ctes: frozenset[str]) -> None:
        ctes = self.with_clause(sel.withClause, outer, done, ctes)
        if sel.op:  # UNION / INTERSECT / EXCEPT
            self.statement(sel.larg, outer, done, ctes)
            self.statement(sel.rarg, outer, done, ctes)
            return
        rels: list[tuple[ast.RangeVar, tuple[Node, ...]]] = []
        inner_quals: list[Node] = []
        for item in sel.fromClause or ():
            self._from_item(item, (), rels, inner_quals, outer, done, ctes)
        self.query_level(
            rels,
            [q for q in (sel.whereClause, *inner_quals) if q is not None],
            outer,
            done,
            ctes,
            extra=(
                *(t for t in sel.targetList or ()),
                *(sel.havingClause,),
                *(v for row in sel.valuesLists or () for v in (row if isinstance(row, tuple) else (row,))),
            ),
        )

    def _from_item(
        self,
        item: Optional[Node],
        nullable: tuple[Node, ...],
        rels: list[tuple[ast.RangeVar, tuple[Node, ...]]],
        inner_quals: list[Node],
        outer: tuple[Scope, ...],
        done: frozenset[int],
        ctes: frozenset[str],
    ) -> None:
        """The relations of a FROM item with the ON conditions that filter them (an outer join's nullable side
        reads only the rows its ON condition matches; the preserved side reads them all)."""
        if isinstance(item, ast.RangeVar):
            if item.schemaname or (item.relname or "") not in ctes:
                rels.append((item, nullable))
        elif isinstance(item, ast.JoinExpr):
            quals = (item.quals,) if item.quals is not None else ()
            jt = item.jointype
            if jt == JoinType.JOIN_INNER:
                inner_quals.extend(quals)
                left, right = nullable, nullable
            elif jt == JoinType.JOIN_LEFT:
                left, right = nullable, nullable + quals
            elif jt == JoinType.JOIN_RIGHT:
                left, right = nullable + quals, nullable
            else:  # FULL: both sides preserved
                left, right = nullable, nullable
            self._from_item(item.larg, left, rels, inner_quals, outer, done, ctes)
            self._from_item(item.rarg, right, rels, inner_quals, outer, done, ctes)
        elif isinstance(item, ast.RangeSubselect):
            self.statement(item.subquery, outer, done, ctes)
        elif isinstance(item, ast.RangeFunction):
            self.sublinks(tuple(children(item)), Frame(outer, definer=True), done, ctes)

    def query_level(
        self,
        rels: list[tuple[ast.RangeVar, tuple[Node, ...]]],
        quals: list[Node],
        outer: tuple[Scope, ...],
        done: frozenset[int],
        ctes: frozenset[str],
        *,
        extra: tuple[Any, ...] = (),
        write: Optional[ast.RangeVar] = None,
    ) -> frozenset[int]:
        """Record the accesses of one query level: ``rels`` (relation, the ON conditions of the outer joins it
        is the nullable side of), filtered by ``quals``; ``write``, one of them, is the statement's target.
        Returns the levels restricted to the caller (for the subqueries below)."""
        tables = [self.find(rv) for rv, _ in rels]
        scopes = [
            Scope(frozenset({(rv.alias.aliasname if rv.alias is not None else None) or rv.relname or ""}), _columns(t))
            for (rv, _), t in zip(rels, tables, strict=True)
        ]
        # relations dbguard does not know come first: an unqualified column is looked up in the known ones
        order = sorted(range(len(rels)), key=lambda i: tables[i] is not None)
        levels = {i: len(outer) + k for k, i in enumerate(order)}
        frame = Frame(outer + tuple(scopes[i] for i in order), definer=True)
        shared = self._restriction(quals, frame)
        restricted: set[int] = set()
        for i, (rv, ons) in enumerate(rels):
            res = Restriction.both(shared, self._restriction(list(ons), frame)) if ons else shared
            if levels[i] in _closure(res, done):
                restricted.add(levels[i])
            t = tables[i]
            if t is None:
                continue
            is_write = rv is write
            tcol = self.tenant_column(t)
            by = self._parameter(quals + list(ons), frame, levels[i], tcol) if tcol else None
            self.out.append(Access(t, is_write, levels[i] in restricted, by))
        now = frozenset(done | restricted | _closure(shared, done))
        self.sublinks((*quals, *(q for _, ons in rels for q in ons), *extra), frame, now, ctes)
        return now

    def update_or_delete(
        self,
        stmt: ast.UpdateStmt | ast.DeleteStmt,
        outer: tuple[Scope, ...],
        done: frozenset[int],
        ctes: frozenset[str],
    ) -> None:
        ctes = self.with_clause(stmt.withClause, outer, done, ctes)
        if stmt.relation is None:
            return
        rels: list[tuple[ast.RangeVar, tuple[Node, ...]]] = [(stmt.relation, ())]
        inner_quals: list[Node] = []
        using = stmt.fromClause if isinstance(stmt, ast.UpdateStmt) else stmt.usingClause
        for item in using or ():
            self._from_item(item, (), rels, inner_quals, outer, done, ctes)
        targets = stmt.targetList if isinstance(stmt, ast.UpdateStmt) else ()
        self.query_level(
            rels,
            [q for q in (stmt.whereClause, *inner_quals) if q is not None],
            outer,
            done,
            ctes,
            extra=(*(targets or ()), *_returning(stmt)),
            write=stmt.relation,
        )

    def insert(
        self, stmt: ast.InsertStmt, outer: tuple[Scope, ...], done: frozenset[int], ctes: frozenset[str]
    ) -> None:
        ctes = self.with_clause(stmt.withClause, outer, done, ctes)
        source = stmt.selectStmt
        if source is not None:
            self.statement(source, outer, done, ctes)
        t = self.find(stmt.relation) if stmt.relation is not None else None
        if t is None:
            return
        tcol = self.tenant_column(t)
        frame = Frame(outer, definer=True)
        restricted = True  # a table without a tenant column (a new tenant): nothing to pin
        by: Optional[str] = None
        if tcol is not None:
            values = self._inserted(stmt, t, tcol)
            kinds = [self.walker.kind(v, frame) for v in values] if values else []
            restricted = bool(kinds) and all(is_context(k) for k in kinds)
            params = [strip_casts(v) for v in values]
            by = next((self._param_name(p) for p in params if isinstance(p, ast.ParamRef) and p.number), None)
        self.out.append(Access(t, True, restricted, by))
        self.sublinks(_returning(stmt), frame, done, ctes)

    def _inserted(self, stmt: ast.InsertStmt, table: Table, tcol: str) -> list[Node]:
        """The values an INSERT gives the tenant column (its default when the statement leaves it out); []
        when they cannot be told."""
        cols = [c.name for c in stmt.cols or () if isinstance(c, ast.ResTarget) and c.name]
        if not cols:
            cols = [c.name for c in sorted(table.columns, key=lambda c: c.position)]
        if tcol not in cols:
            col = next((c for c in table.columns if c.name == tcol), None)
            if col is None or not col.default:
                return []
            try:
                return [parse_expression(col.default)]
            except PolicyParseError:
                return []
        i = cols.index(tcol)
        src = stmt.selectStmt
        if not isinstance(src, ast.SelectStmt) or src.op:
            return []
        if src.valuesLists:
            rows = [r if isinstance(r, tuple) else (r,) for r in src.valuesLists]
            return [r[i] for r in rows if i < len(r) and isinstance(r[i], ast.Node)]
        targets = [x.val for x in src.targetList or () if isinstance(x, ast.ResTarget)]
        value = targets[i] if i < len(targets) else None
        if src.fromClause or value is None:
            return []  # rows copied from a query: the values are the rows'
        return [value]

    # ---------------------------------------------------------------- expressions
    def sublinks(self, exprs: tuple[Any, ...], frame: Frame, done: frozenset[int], ctes: frozenset[str]) -> None:
        """The queries inside expressions (sublinks), each a query level below ``frame``."""
        for sub in _sublinks(exprs):
            self.statement(sub.subselect, frame.scopes, done, ctes)

    def _restriction(self, quals: list[Node], frame: Frame) -> Restriction:
        res = Restriction()
        for q in quals:
            res = Restriction.both(res, self.walker.restriction(normalize(q) or q, frame))
        return res

    def _parameter(self, quals: list[Node], frame: Frame, level: int, tcol: str) -> Optional[str]:
        """The parameter the tenant column of the relation at ``level`` is compared with, if any."""
        for node in walk(tuple(quals)):
            if not isinstance(node, ast.A_Expr) or operator(node.name) != "=":
                continue
            if node.kind not in (A_Expr_Kind.AEXPR_OP, A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_IN):
                continue
            right = node.rexpr if isinstance(node.rexpr, ast.Node) else None
            for a, b in ((node.lexpr, right), (right, node.lexpr)):
                if self.walker.col(a, frame) == (level, tcol):
                    p = strip_casts(b)
                    if isinstance(p, ast.ParamRef) and p.number:
                        return self._param_name(p)
        return None

    def _param_name(self, p: ast.ParamRef) -> str:
        n = p.number or 0
        name = self.params[n - 1] if 1 <= n <= len(self.params) else None
        return name or f"${n}"


def _returning(stmt: Node) -> tuple[Any, ...]:
    """A DML statement's RETURNING list (``returningClause`` in newer parsers, ``returningList`` before)."""
    return tuple(x for x in (getattr(stmt, "returningClause", None), getattr(stmt, "returningList", None)) if x)


def _sublinks(tree: Any) -> Iterator[ast.SubLink]:
    """The sublinks of expressions, outermost first, without entering their queries."""
    stack = [tree]
    while stack:
        cur = stack.pop()
        if type(cur) is tuple:
            stack.extend(reversed(cur))
            continue
        if not isinstance(cur, ast.Node):
            continue
        if isinstance(cur, ast.SubLink):
            yield cur
            if cur.testexpr is not None:
                stack.append(cur.testexpr)
            continue
        if isinstance(cur, (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)):
            continue  # queries are read as statements
        stack.extend(reversed(tuple(children(cur))))


def _closure(res: Restriction, done: frozenset[int]) -> set[int]:
    """The levels whose rows are tied to the caller: pinned ones, outer ones already known to be, and every
    level joined by equality to one of them."""
    out = set(done) | set(res.levels())
    changed = True
    while changed:
        changed = False
        for (la, _), (lb, _) in res.corr:
            if (la in out) != (lb in out):
                out |= {la, lb}
                changed = True
    return out


def _columns(table: Optional[Table]) -> Optional[frozenset[str]]:
    return frozenset(c.name for c in table.columns) if table is not None else None


def _search_path(fn: Function) -> list[str]:
    path = fn.search_path
    if not path:
        return []
    out = []
    for part in path.split(","):
        p = part.strip()
        if p.startswith('"') and p.endswith('"') and len(p) >= 2:
            p = p[1:-1].replace('""', '"')
        if p and p not in ("''", '""', "$user"):
            out.append(p)
    return out
