"""The fixes the causes ask for, as migrations (:class:`fixes.plan.Migration`) with their exact rollback.

- ``optimize-policy TABLE``: planned by :func:`dbguard_pipeline.fixes.actions.optimize_policy.plan_optimize_policy`
  (the generator's action, so ``dbguard generate-migration optimize-policy TABLE`` writes the same file).
- ``add-composite-index RELATION COLUMNS``: an index built CONCURRENTLY (the same statements as the
  ``add-composite-index`` action), for the tenant column or for a membership look-up.

Pure: no database here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Optional

from dbguard_pipeline.analyze.report import Cause, Fix, Suggestion
from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError, NotFoundError
from dbguard_pipeline.fixes.actions.optimize_policy import OPTIMIZE_POLICY, plan_optimize_policy
from dbguard_pipeline.fixes.plan import Block, Migration
from dbguard_pipeline.fixes.sql import pg_name
from dbguard_pipeline.model.schema import Snapshot, Table
from dbguard_pipeline.semantics.indexes import leads_with
from dbguard_pipeline.text import ident, qname, quoted, quoted_qname

__all__ = ["ADD_INDEX", "OPTIMIZE_POLICY", "plan_index", "plan_optimize_policy", "suggestions_for"]

ADD_INDEX = "add-composite-index"


def _table(snapshot: Snapshot, name: str) -> Table:
    t = snapshot.table(name)
    if t is None:
        raise NotFoundError(f"table not found in {snapshot.database}: {name}")
    return t


def _shown(snapshot: Snapshot, name: str) -> str:
    """A table's name as people read it (quoted when needed); the key itself when the table is not there."""
    t = snapshot.table(name)
    return qname(t.schema, t.name) if t is not None else name


def _migration(action: str, table: Table, config: Config) -> Migration:
    return Migration(
        action=action,
        schema=table.schema,
        table=table.name,
        lock_timeout_ms=config.lock_timeout_ms,
        statement_timeout_ms=config.statement_timeout_ms,
    )


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
        raise DbguardError(
            f"cannot find a free name for an index on {qname(table.schema, table.name)} ({', '.join(map(ident, columns))})"
        )
    return name


def plan_index(
    snapshot: Snapshot, config: Config, relation: str, columns: Sequence[str], fixes: Sequence[str] = ()
) -> Optional[Migration]:
    """CREATE INDEX CONCURRENTLY on ``relation`` (columns), or None when an index already leads with them."""
    table = _table(snapshot, relation)
    cols = tuple(columns)
    if any(ix.valid and leads_with(ix, cols) for ix in table.indexes):
        return None
    name = _index_name(snapshot, table, cols)
    col_sql = ", ".join(quoted(c) for c in cols)
    m = _migration(ADD_INDEX, table, config)
    m.forward = [
        Block(
            (
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quoted(name)} ON {quoted_qname(table.schema, table.name)} "
                f"({col_sql})",
            ),
            transactional=False,
            untimed="all",
            comment=f"index ({', '.join(map(ident, cols))}) without blocking writes",
        )
    ]
    m.rollback = [
        Block(
            (f"DROP INDEX CONCURRENTLY IF EXISTS {quoted_qname(table.schema, name)}",),
            transactional=False,
            untimed="all",
        )
    ]
    shown_cols = ", ".join(map(ident, cols))
    m.what = [f"create index {ident(name)} on {qname(table.schema, table.name)} ({shown_cols}) concurrently"]
    m.undo = [f"drop index {ident(name)} concurrently"]
    m.why = ["row level security reads more rows than the tenant's (dbguard analyze measured it)"]
    m.fixes = list(fixes)
    m.params = {"column_sets": [list(cols)]}
    return m


def suggestions_for(
    causes: Sequence[Cause],
    measured_table: str,
    snapshot: Snapshot,
    config: Config,
    known: dict[tuple[str, str, tuple[str, ...]], Suggestion],
) -> list[Suggestion]:
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
            shown = _shown(snapshot, fix.relation)
            title = f"optimize-policy {shown}: " + "; ".join(m.what) if m else ""
            if m is not None:
                m.why = ["row level security evaluated per row (dbguard analyze measured it)"]
            action, cols = OPTIMIZE_POLICY, tuple[str, ...]()
        else:
            rel = _table(snapshot, fix.relation)
            keys = (
                [f"missing_tenant_index:{rel.qualified}:{fix.columns[0]}"]
                if fix.columns == (config.tenant.column,)
                else []
            )
            m = plan_index(snapshot, config, fix.relation, fix.columns, keys)
            title = f"add-composite-index {qname(rel.schema, rel.name)} ({', '.join(map(ident, fix.columns))})"
            action, cols = ADD_INDEX, fix.columns
        if m is None:
            continue
        s = Suggestion(
            action=action,
            relation=fix.relation,
            columns=cols,
            title=title,
            causes=list(wanted[fix]),
            tables=[measured_table],
            migration=m,
        )
        known[key] = s
        out.append(s)
    return out
