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

Parameters are the caller's choice, not the context: ``org_id = p_org`` alone restricts nothing (the access
records the parameter in ``by_parameter``). A parameter becomes the caller's when the body checks it
against the caller: a membership subquery or helper on it in the same query (``AND is_member(p_org)``,
``AND EXISTS (SELECT 1 FROM members WHERE user_id = auth.uid() AND org_id = p_org)``), or a PL/pgSQL guard
at the top of the body that raises or returns otherwise (``IF NOT is_member(p_org) THEN RAISE ...``). To
ask the Restrictor, each parameter is a column of scope level 0 (the function's own), so a check pins it
like any column. A PL/pgSQL variable assigned once from the context (``v := current_setting(...)``) is
read as that value; any other variable is unknown. The function runs with its owner's rights, so row level
security on the tables a subquery reads restricts nothing either (``Frame.definer``).

A body that does not parse gives None (no answer: the caller stays quiet); dynamic SQL (``EXECUTE``) and the
bodies of the functions it calls are not read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType, JoinType
from pglast.parser import ParseError, parse_plpgsql_json

from dbguard_pipeline.model.schema import Function, Table
from dbguard_pipeline.policy.analyzer import Analyzer
from dbguard_pipeline.policy.context import is_context
from dbguard_pipeline.policy.inline import _ASSIGNED, _arg_names, _json_body, _json_nodes, _json_type
from dbguard_pipeline.policy.normal import normalize
from dbguard_pipeline.policy.parse import (
    Node,
    PolicyParseError,
    _child_members,
    children,
    names,
    operator,
    parse_expression,
    parse_statements,
    walk,
    with_members,
)
from dbguard_pipeline.policy.restriction import Restriction, Restrictor
from dbguard_pipeline.policy.scope import OUTER, Frame, Pass, Scope

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
    command: str = "select"  # select | insert | update | delete | merge


def body_accesses(
    fn: Function, analyzer: Analyzer, tenant_column: Callable[[Table], Optional[str]]
) -> Optional[tuple[Access, ...]]:
    """The tables ``fn``'s body reads and writes (in the order the statements name them), or None when the
    body cannot be read (no body, another language, a parse error)."""
    read = _statements(fn)
    if read is None:
        return None
    statements, guards = read
    params = _arg_names(fn.arguments or "")
    reader = _Reader(fn, analyzer, tenant_column, params)
    try:
        variables = statements[0][1] if statements else {}
        reader.checked = frozenset(n for g in guards for n in reader.checked_by(_bind(g, reader, variables)))
        for stmt, variables in statements:
            reader.statement(_bind(stmt, reader, variables), _BASE, frozenset(), frozenset())
    except RecursionError:
        return None
    return tuple(reader.out)


_BASE: tuple[Scope, ...] = (_FUNCTION_SCOPE,)


# --------------------------------------------------------------------------- the statements of a body
Statements = list[tuple[Node, dict[str, Node]]]  # (statement, PL/pgSQL variables with their one value)
Read = tuple[Statements, list[Node]]  # the statements, and the conditions the body's guards require


def _statements(fn: Function) -> Optional[Read]:
    lang = (fn.language or "").lower()
    body = fn.body or ""
    if not body.strip():
        return None
    try:
        if lang == "sql":
            return [(raw.stmt, {}) for raw in parse_statements(body) if raw.stmt is not None], []
        if lang == "plpgsql":
            return _plpgsql_statements(fn, body)
    except PolicyParseError:
        return None
    return None


def _plpgsql_statements(fn: Function, body: str) -> Optional[Read]:
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
    guards = [g for f in (tree if isinstance(tree, list) else [tree]) for g in _guards(f)]
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
    required: list[Node] = []
    for cond in (x for g in guards for x in _values(parsed(g, 2))):
        args = cond.args or () if isinstance(cond, ast.BoolExpr) and cond.boolop == BoolExprType.NOT_EXPR else ()
        if len(args) == 1:
            required.append(args[0])  # IF NOT <required> THEN RAISE
    return [(p, variables) for p in pieces], required


_RAISE_ERROR = 21  # elog_level of RAISE EXCEPTION


def _guards(function: Any) -> list[str]:
    """The conditions the function's outer block requires before it goes on: ``IF NOT <cond> THEN RAISE
    EXCEPTION ... / RETURN ... END IF`` (no ELSE) gives ``<cond>``."""
    block = _json_body(_json_body(function).get("action"))
    out = []
    for st in block.get("body", []) or ():
        kind, b = _json_type(st)
        if kind != "PLpgSQL_stmt_if" or b.get("elsif_list") or b.get("else_body"):
            continue
        stops = False
        for inner in b.get("then_body", []) or ():
            ik, ib = _json_type(inner)
            if ik == "PLpgSQL_stmt_return" or (
                ik == "PLpgSQL_stmt_raise" and int(ib.get("elog_level", _RAISE_ERROR) or 0) >= _RAISE_ERROR
            ):
                stops = True
        q = _json_body(b.get("cond")).get("query")
        if stops and q:
            out.append(q)
    return out


_UNKNOWN = ast.ParamRef(number=0)  # a value the analysis cannot know (a variable assigned twice, ...)
UNKNOWN_PREFIX = "?"  # level-0 columns standing for such variables


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
        values[p or f"${i + 1}"] = _param_column(reader.param_name(i + 1))
    for name, v in variables.items():
        if name not in values:
            # a variable whose value is unknown is a column of its own (UNKNOWN_PREFIX): no guess either way
            known = v is not _UNKNOWN
            values[name] = (
                _substitute(v, dict(values), reader.fn.name, set(), 0)
                if known
                else _param_column(f"{UNKNOWN_PREFIX}{name}")
            )
    return _substitute(stmt, values, reader.fn.name, columns, 0)


def _param_column(name: str) -> Node:
    """A parameter as a column of scope level 0 (the function's own), see ``inline.bind``."""
    return ast.ColumnRef(fields=(ast.String(sval=f"{OUTER}0"), ast.String(sval=name)))


def _substitute(node: Node, values: dict[str, Node], fname: str, columns: set[str], depth: int) -> Node:
    if depth > _MAX_DEPTH * 4:
        return node
    if isinstance(node, ast.ParamRef):
        return values.get(f"${node.number}", node) if node.number else node
    if isinstance(node, ast.ColumnRef):
        fields = names(node.fields)
        if len(fields) == 1 and fields[0] in values and fields[0] not in columns and not fields[0].startswith("$"):
            return values[fields[0]]
        if len(fields) == 2 and fields[0] == fname and fields[1] in values:
            return values[fields[1]]
        return node
    # copy on write: a subtree without a parameter or variable is shared, not rebuilt
    changed: dict[str, Any] = {}
    for m in _child_members(type(node)):
        value = getattr(node, m)
        if value is not None:
            out = _substitute_value(value, values, fname, columns, depth + 1)
            if out is not value:
                changed[m] = out
    if not changed:
        return node
    return with_members(node, changed)


def _substitute_value(value: Any, values: dict[str, Node], fname: str, columns: set[str], depth: int) -> Any:
    if isinstance(value, ast.Node):
        return _substitute(value, values, fname, columns, depth)
    if type(value) is tuple:
        items = tuple(_substitute_value(v, values, fname, columns, depth) for v in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


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
        self.checked: frozenset[str] = frozenset()  # parameters the body's guards check against the caller

    def param_name(self, n: int) -> str:
        name = self.params[n - 1] if 1 <= n <= len(self.params) else None
        return name or f"${n}"

    def checked_by(self, condition: Node) -> set[str]:
        """The parameters a condition ties to the caller (``is_member(p_org)``, a membership EXISTS)."""
        res = self.walker.restriction(normalize(condition) or condition, Frame(_BASE, definer=True))
        return {col for (lvl, col), kind in res.pins.items() if lvl == 0 and is_context(kind)}

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
        self,
        node: Optional[Node],
        outer: tuple[Scope, ...],
        done: frozenset[int],
        ctes: frozenset[str],
        trusted: bool = False,
    ) -> None:
        """Record the accesses of a statement. ``trusted``: the query's rows are restricted to the caller by
        the query around it (a derived table or CTE whose tenant column the outer query pins)."""
        if len(outer) > _MAX_DEPTH:
            return
        if isinstance(node, ast.SelectStmt):
            self.select(node, outer, done, ctes, trusted)
        elif isinstance(node, (ast.UpdateStmt, ast.DeleteStmt)):
            self.update_or_delete(node, outer, done, ctes)
        elif isinstance(node, ast.InsertStmt):
            self.insert(node, outer, done, ctes)
        elif isinstance(node, ast.MergeStmt):
            self.merge(node, outer, done, ctes)
        elif node is not None:
            # anything else (CALL, a utility statement): only the queries inside it
            self.sublinks(tuple(children(node)), Frame(outer, definer=True), done, ctes)

    def select(
        self, sel: ast.SelectStmt, outer: tuple[Scope, ...], done: frozenset[int], ctes: frozenset[str], trusted: bool
    ) -> None:
        defs = _cte_queries(sel.withClause)
        ctes = ctes | set(defs)
        if sel.op:  # UNION / INTERSECT / EXCEPT
            self.statement(sel.larg, outer, done, ctes, trusted)
            self.statement(sel.rarg, outer, done, ctes, trusted)
            self._ctes(defs, sel, [], outer, done, ctes)
            return
        rels: list[_Rel] = []
        inner_quals: list[Node] = []
        for item in sel.fromClause or ():
            self._from_item(item, (), rels, inner_quals, outer, done, ctes)
        values = (v for row in sel.valuesLists or () for v in (row if isinstance(row, tuple) else (row,)))
        self.query_level(
            rels,
            [q for q in (sel.whereClause, *inner_quals) if q is not None],
            outer,
            done,
            ctes,
            extra=(*(sel.targetList or ()), sel.havingClause, *values),
            trusted=trusted,
        )
        self._ctes(defs, sel, rels, outer, done, ctes)

    def _ctes(
        self,
        defs: dict[str, Node],
        stmt: Node,
        rels: list[_Rel],
        outer: tuple[Scope, ...],
        done: frozenset[int],
        ctes: frozenset[str],
    ) -> None:
        """The WITH queries of ``stmt``: trusted when every reference to one is a relation of the main query
        that it restricts to the caller."""
        for name, query in defs.items():
            refs = [r for r in rels if r.cte == name]
            everywhere = sum(
                1 for n in walk(stmt) if isinstance(n, ast.RangeVar) and not n.schemaname and n.relname == name
            )
            trusted = bool(refs) and len(refs) == everywhere and all(r.trusted for r in refs)
            self.statement(query, outer, done, ctes, trusted)

    def _from_item(
        self,
        item: Optional[Node],
        nullable: tuple[Node, ...],
        rels: list[_Rel],
        inner_quals: list[Node],
        outer: tuple[Scope, ...],
        done: frozenset[int],
        ctes: frozenset[str],
    ) -> None:
        """The relations of a FROM item with the ON conditions that filter them (an outer join's nullable side
        reads only the rows its ON condition matches; the preserved side reads them all)."""
        if isinstance(item, ast.RangeVar):
            alias = (item.alias.aliasname if item.alias is not None else None) or item.relname or ""
            if not item.schemaname and (item.relname or "") in ctes:
                rels.append(_Rel(alias, None, nullable, cte=item.relname))
            else:
                table = self.find(item)
                rels.append(_Rel(alias, table, nullable, range_var=item, columns=_columns(table)))
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
            named = item.alias
            colnames = names(named.colnames) if named is not None else []
            columns = frozenset(colnames) if colnames else _output_columns(item.subquery)
            label = (named.aliasname if named is not None else None) or ""
            rels.append(_Rel(label, None, nullable, query=item.subquery, columns=columns))
        elif isinstance(item, ast.RangeFunction):
            self.sublinks(tuple(children(item)), Frame(outer, definer=True), done, ctes)

    def query_level(
        self,
        rels: list[_Rel],
        quals: list[Node],
        outer: tuple[Scope, ...],
        done: frozenset[int],
        ctes: frozenset[str],
        *,
        extra: tuple[Any, ...] = (),
        write: Optional[ast.RangeVar] = None,
        command: str = "select",
        trusted: bool = False,
    ) -> None:
        """Record the accesses of one query level: ``rels`` (each with the ON conditions of the outer joins it
        is the nullable side of), filtered by ``quals``; ``write``, one of them, is the statement's target.
        Then the queries below it: derived tables (trusted when this level restricts them) and sublinks."""
        scopes = [Scope(frozenset({r.name}), r.columns) for r in rels]
        # relations whose columns dbguard does not know come first: unqualified columns go to the known ones
        order = sorted(range(len(rels)), key=lambda i: rels[i].columns is not None)
        levels = {i: len(outer) + k for k, i in enumerate(order)}
        frame = Frame(outer + tuple(scopes[i] for i in order), definer=True)
        shared = self._restriction(quals, frame)
        restricted: set[int] = set()
        for i, r in enumerate(rels):
            res = Restriction.both(shared, self._restriction(list(r.nullable), frame)) if r.nullable else shared
            if trusted or levels[i] in _closure(res, done, self.checked):
                restricted.add(levels[i])
            r.trusted = levels[i] in restricted
            t = r.table
            if t is None:
                continue
            is_write = write is not None and r.range_var is write
            tcol = self.tenant_column(t)
            by = self._parameter(quals + list(r.nullable), frame, levels[i], tcol) if tcol else None
            self.out.append(Access(t, is_write, r.trusted, by, command if is_write else "select"))
        for r in rels:
            if r.query is not None:
                self.statement(r.query, outer, done, ctes, r.trusted)
        now = frozenset(done | restricted | _closure(shared, done, self.checked))
        self.sublinks((*quals, *(q for r in rels for q in r.nullable), *extra), frame, now, ctes)

    def update_or_delete(
        self,
        stmt: ast.UpdateStmt | ast.DeleteStmt,
        outer: tuple[Scope, ...],
        done: frozenset[int],
        ctes: frozenset[str],
    ) -> None:
        defs = _cte_queries(stmt.withClause)
        ctes = ctes | set(defs)
        rels: list[_Rel] = []
        if stmt.relation is not None:
            self._from_item(stmt.relation, (), rels, [], outer, done, frozenset())
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
            command="update" if isinstance(stmt, ast.UpdateStmt) else "delete",
        )
        self._ctes(defs, stmt, rels, outer, done, ctes)

    def merge(self, stmt: ast.MergeStmt, outer: tuple[Scope, ...], done: frozenset[int], ctes: frozenset[str]) -> None:
        """MERGE: the target is written where the join condition matches the source rows (a row it inserts
        is judged as a write of the target, like an UPDATE)."""
        defs = _cte_queries(stmt.withClause)
        ctes = ctes | set(defs)
        rels: list[_Rel] = []
        if stmt.relation is not None:
            self._from_item(stmt.relation, (), rels, [], outer, done, frozenset())
        self._from_item(stmt.sourceRelation, (), rels, [], outer, done, ctes)
        self.query_level(
            rels,
            [stmt.joinCondition] if stmt.joinCondition is not None else [],
            outer,
            done,
            ctes,
            extra=(*(stmt.mergeWhenClauses or ()), *_returning(stmt)),
            write=stmt.relation,
            command="merge",
        )
        self._ctes(defs, stmt, rels, outer, done, ctes)

    def insert(
        self, stmt: ast.InsertStmt, outer: tuple[Scope, ...], done: frozenset[int], ctes: frozenset[str]
    ) -> None:
        defs = _cte_queries(stmt.withClause)
        ctes = ctes | set(defs)
        source = stmt.selectStmt
        if source is not None:
            self.statement(source, outer, done, ctes)
        self._ctes(defs, stmt, [], outer, done, ctes)
        t = self.find(stmt.relation) if stmt.relation is not None else None
        if t is None:
            return
        tcol = self.tenant_column(t)
        frame = Frame(outer, definer=True)
        restricted = True  # a table without a tenant column: nothing to pin
        by: Optional[str] = None
        if tcol is not None:
            values = self._inserted(stmt, t, tcol)
            params = [c[1] for c in (self.walker.col(v, frame) for v in values) if c is not None and c[0] == 0]
            restricted = bool(values) and all(
                is_context(self.walker.kind(v, frame))
                or (c is not None and c[0] == 0 and (c[1] in self.checked or c[1].startswith(UNKNOWN_PREFIX)))
                for v, c in ((v, self.walker.col(v, frame)) for v in values)
            )
            by = next((p for p in params if p in self._param_names), None)
        self.out.append(Access(t, True, restricted, by, "insert"))
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
                    p = self.walker.col(b, frame)
                    if p is not None and p[0] == 0 and p[1] in self._param_names:
                        return p[1]
        return None

    @property
    def _param_names(self) -> set[str]:
        return {self.param_name(i + 1) for i in range(len(self.params))}


@dataclass
class _Rel:
    """A relation of a query level: a table (or a relation dbguard does not know), a WITH query named in FROM, or
    a derived table; ``trusted`` once the level's conditions restrict its rows to the caller."""

    name: str  # the name the query level gives it (alias or relation name)
    table: Optional[Table]
    nullable: tuple[Node, ...]  # the ON conditions of the outer joins it is the nullable side of
    range_var: Optional[ast.RangeVar] = None
    cte: Optional[str] = None
    query: Optional[Node] = None
    columns: Optional[frozenset[str]] = None  # None: unknown
    trusted: bool = False


def _cte_queries(clause: Optional[ast.WithClause]) -> dict[str, Node]:
    out: dict[str, Node] = {}
    for c in clause.ctes or () if clause is not None else ():
        if isinstance(c, ast.CommonTableExpr) and c.ctename and c.ctequery is not None:
            out[c.ctename] = c.ctequery
    return out


def _output_columns(query: Optional[Node]) -> Optional[frozenset[str]]:
    """The column names a derived table's query yields, None when they cannot be told (``*``, a set operation)."""
    if not isinstance(query, ast.SelectStmt) or query.op or query.valuesLists:
        return None
    out = set()
    for t in query.targetList or ():
        if not isinstance(t, ast.ResTarget):
            return None
        if t.name:
            out.add(t.name)
            continue
        if isinstance(t.val, ast.ColumnRef):
            fields = names(t.val.fields)
            if not fields or fields[-1] == "*":
                return None
            out.add(fields[-1])
        else:
            return None  # ?column? or a function's name: not worth guessing
    return frozenset(out)


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


def _closure(res: Restriction, done: frozenset[int], checked: frozenset[str]) -> set[int]:
    """The relation levels whose rows are tied to the caller: pinned ones, outer ones already known to be, and
    every level equal on a column to one of them or to a parameter checked against the caller (level 0, the
    function's own, is never a relation: only its checked parameters count)."""
    params = set(checked) | {col for (lvl, col), kind in res.pins.items() if lvl == 0 and is_context(kind)}
    unknown = {c for a in res.corr for (lvl, c) in a if lvl == 0 and c.startswith(UNKNOWN_PREFIX)}
    params |= unknown  # compared with a variable dbguard cannot follow: no guess
    out = (set(done) | set(res.levels())) - {0}
    changed = True
    while changed:
        changed = False
        for a, b in res.corr:
            for (la, ca), (lb, _) in ((a, b), (b, a)):
                if lb != 0 and lb not in out and ((la != 0 and la in out) or (la == 0 and ca in params)):
                    out.add(lb)
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
