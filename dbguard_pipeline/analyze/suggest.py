"""The fixes the causes ask for, as migrations (:class:`fixes.plan.Migration`) with their exact rollback.

- ``optimize-policy TABLE``: every policy of the table rewritten by :mod:`.rewrite` (context calls wrapped in
  ``(select ...)``, ``IN (SELECT ...)`` as ``= ANY (ARRAY(SELECT ...))``) with ``ALTER POLICY`` (roles, command
  and name stay), and the VOLATILE helpers those policies call, when their body only reads, declared STABLE with
  a fixed search_path. One transaction; the rollback restores each expression and function setting as it was.
- ``add-composite-index RELATION COLUMNS``: an index built CONCURRENTLY (the same statements as the
  ``add-composite-index`` action), for the tenant column or for a membership look-up.

:func:`plan_optimize_policy` is a pure function of the snapshot and the config, so ``dbguard generate-migration
optimize-policy TABLE`` can call it as it is. Pure: no database here.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Optional

from dbguard_pipeline.analyze.report import Cause, Fix, Suggestion
from dbguard_pipeline.analyze.rewrite import called_functions, read_only_body, rewrite
from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError, NotFoundError
from dbguard_pipeline.fixes.plan import Block, Migration
from dbguard_pipeline.fixes.sql import pg_name
from dbguard_pipeline.model.schema import Function, Snapshot, Table
from dbguard_pipeline.policy import per_row_calls
from dbguard_pipeline.semantics.indexes import leads_with
from dbguard_pipeline.text import quoted as ident
from dbguard_pipeline.text import quoted_qname as qname

OPTIMIZE_POLICY = "optimize-policy"
ADD_INDEX = "add-composite-index"


def _table(snapshot: Snapshot, name: str) -> Table:
    t = snapshot.table(name)
    if t is None:
        raise NotFoundError(f"table not found in {snapshot.database}: {name}")
    return t


def _migration(action: str, table: Table, config: Config) -> Migration:
    return Migration(action=action, schema=table.schema, table=table.name, lock_timeout_ms=config.lock_timeout_ms,
                     statement_timeout_ms=config.statement_timeout_ms)


def _helpers_to_stabilize(table: Table, snapshot: Snapshot) -> list[Function]:
    out: list[Function] = []
    for p in table.policies:
        for expr in (p.using, p.with_check):
            for fn in called_functions(expr, snapshot):
                if fn.volatility == "volatile" and read_only_body(fn) and fn not in out:
                    out.append(fn)
    return sorted(out, key=lambda f: (f.schema, f.name, f.arguments))


def _alter_policy(table: Table, name: str, using: Optional[str], check: Optional[str]) -> str:
    parts = [f"ALTER POLICY {ident(name)} ON {qname(table.schema, table.name)}"]
    if using is not None:
        parts.append(f"    USING ({using})")
    if check is not None:
        parts.append(f"    WITH CHECK ({check})")
    return "\n".join(parts)


def plan_optimize_policy(snapshot: Snapshot, config: Config, table_name: str) -> Optional[Migration]:
    """The optimize-policy migration of a table, or None when no policy of it can be rewritten."""
    table = _table(snapshot, table_name)
    helpers = _helpers_to_stabilize(table, snapshot)
    stabilized = [f.qualified for f in helpers]
    fwd: list[str] = []
    back: list[str] = []
    what: list[str] = []
    undo: list[str] = []
    fixes: list[str] = []
    for p in sorted(table.policies, key=lambda p: p.name):
        new_using = rewrite(p.using, table, snapshot, config, stabilized)
        new_check = rewrite(p.with_check, table, snapshot, config, stabilized)
        if new_using is None and new_check is None:
            continue
        fwd.append(_alter_policy(table, p.name, new_using.text if new_using else None,
                                 new_check.text if new_check else None))
        back.append(_alter_policy(table, p.name, p.using if new_using else None, p.with_check if new_check else None))
        changes = list(dict.fromkeys((new_using.changes() if new_using else []) +
                                     (new_check.changes() if new_check else [])))
        what.append(f"policy {p.name}: {'; '.join(changes)}")
        undo.append(f"restore the expressions of policy {p.name}")
        if any(per_row_calls(e) for e in (p.using, p.with_check) if e):
            fixes.append(f"auth_rls_initplan:{table.qualified}:{p.name}")
    if not fwd:
        return None
    head, tail, fn_what, fn_undo = [], [], [], []
    for fn in helpers:
        sig = f"{qname(fn.schema, fn.name)}({fn.arguments})"
        path = f"pg_catalog, {ident(fn.schema)}, pg_temp"
        head.append(f"ALTER FUNCTION {sig} STABLE" + ("" if fn.search_path else f" SET search_path = {path}"))
        tail.append(f"ALTER FUNCTION {sig} VOLATILE" + ("" if fn.search_path else " RESET search_path"))
        fn_what.append(f"declare {fn.qualified}() STABLE" + ("" if fn.search_path else f" with search_path {path}")
                       + " (its body only reads: one value per query)")
        fn_undo.append(f"{fn.qualified}() VOLATILE again" + ("" if fn.search_path else ", search_path reset"))
    what, undo = fn_what + what, undo + fn_undo
    m = _migration(OPTIMIZE_POLICY, table, config)
    m.forward = [Block(tuple(head + fwd), comment="policies evaluated once per query, not once per row")]
    m.rollback = [Block(tuple(back + tail), comment="the policies and functions exactly as they were")]
    m.what, m.undo, m.fixes = what, undo, fixes
    m.why = ["row level security evaluated per row (dbguard analyze measured it)"]
    m.notes = ["ALTER POLICY keeps each policy's name, roles, command and permissive flag"]
    if head:
        m.notes.append("a function declared STABLE applies to every caller, not only these policies")
    m.params = {"table": table.qualified}
    return m


def _index_name(snapshot: Snapshot, table: Table, columns: Sequence[str]) -> str:
    taken = set()
    for t in snapshot.tables:
        if t.schema == table.schema:
            taken.add(t.name)
            taken.update(i.name for i in t.indexes)
    taken.update(v.name for v in snapshot.views if v.schema == table.schema)
    name = pg_name(f"{table.name}_{'_'.join(columns)}", "idx")
    if name in taken:
        digest = hashlib.sha256("\x00".join(columns).encode("utf-8")).hexdigest()[:6]
        name = pg_name(f"{table.name}_{'_'.join(columns)}_{digest}", "idx")
    if name in taken:
        raise DbguardError(f"cannot find a free name for an index on {table.qualified} ({', '.join(columns)})")
    return name


def plan_index(snapshot: Snapshot, config: Config, relation: str, columns: Sequence[str],
               fixes: Sequence[str] = ()) -> Optional[Migration]:
    """CREATE INDEX CONCURRENTLY on ``relation`` (columns), or None when an index already leads with them."""
    table = _table(snapshot, relation)
    cols = tuple(columns)
    if any(ix.valid and leads_with(ix, cols) for ix in table.indexes):
        return None
    name = _index_name(snapshot, table, cols)
    col_sql = ", ".join(ident(c) for c in cols)
    m = _migration(ADD_INDEX, table, config)
    m.forward = [Block((f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {ident(name)} ON {qname(table.schema, table.name)} "
                        f"({col_sql})",), transactional=False, untimed="all",
                       comment=f"index ({', '.join(cols)}) without blocking writes")]
    m.rollback = [Block((f"DROP INDEX CONCURRENTLY IF EXISTS {qname(table.schema, name)}",), transactional=False,
                        untimed="all")]
    m.what = [f"create index {ident(name)} on {table.qualified} ({', '.join(cols)}) concurrently"]
    m.undo = [f"drop index {ident(name)} concurrently"]
    m.why = ["row level security reads more rows than the tenant's (dbguard analyze measured it)"]
    m.fixes = list(fixes)
    m.params = {"column_sets": [list(cols)]}
    return m


def suggestions_for(causes: Sequence[Cause], measured_table: str, snapshot: Snapshot, config: Config,
                    known: dict[tuple[str, str, tuple[str, ...]], Suggestion]) -> list[Suggestion]:
    """One suggestion per distinct fix the causes ask for (policy rewrites first, then indexes); ``known``
    shares a suggestion between tables that need the same fix (a membership index serves several)."""
    wanted: dict[Fix, list[str]] = {}
    for c in causes:
        if c.fix is not None:
            wanted.setdefault(c.fix, [])
            if c.kind not in wanted[c.fix]:
                wanted[c.fix].append(c.kind)
    out: list[Suggestion] = []
    for fix in sorted(wanted, key=lambda f: (f.kind != "policy", f.relation, f.columns)):
        key = (fix.kind, fix.relation, fix.columns)
        if key in known:
            s = known[key]
            if measured_table not in s.tables:
                s.tables.append(measured_table)
            s.causes.extend(k for k in wanted[fix] if k not in s.causes)
            out.append(s)
            continue
        if fix.kind == "policy":
            m = plan_optimize_policy(snapshot, config, fix.relation)
            title = f"optimize-policy {fix.relation}: " + "; ".join(m.what) if m else ""
            action, cols = OPTIMIZE_POLICY, tuple[str, ...]()
        else:
            rel = _table(snapshot, fix.relation)
            keys = ([f"missing_tenant_index:{rel.qualified}:{fix.columns[0]}"]
                    if fix.columns == (config.tenant.column,) else [])
            m = plan_index(snapshot, config, fix.relation, fix.columns, keys)
            title = f"add-composite-index {fix.relation} ({', '.join(fix.columns)})"
            action, cols = ADD_INDEX, fix.columns
        if m is None:
            continue
        s = Suggestion(action=action, relation=fix.relation, columns=cols, title=title, causes=list(wanted[fix]),
                       tables=[measured_table], migration=m)
        known[key] = s
        out.append(s)
    return out
