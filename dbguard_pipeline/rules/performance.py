"""Performance rules: indexes the tenant model needs, redundant indexes, policies evaluated per row."""
from __future__ import annotations

import re
import shlex
from typing import Any, Mapping, Optional

from dbguard_pipeline.model.schema import Index, Snapshot, Table
from dbguard_pipeline.semantics.tenancy import audited_tables, has_tenant_column, tenant_column
from dbguard_pipeline.rules import rule
from dbguard_pipeline.semantics.indexes import covering_index, usable
from dbguard_pipeline.rules._common import (ALL_COMMANDS, analyzer, bypass_roles, fix_rls_command, ident, in_tenant_scope, qname, table_arg, using_analysis)


def _leads_with(table: Table, columns: tuple[str, ...]) -> bool:
    return covering_index(table, columns) is not None


@rule("unindexed_foreign_key", "info", "performance", "Foreign key without an index",
      "No index leads with the foreign-key columns: joins on the key scan the table, and every delete or "
      "key update of a parent row scans the child table while holding locks.",
      fix_action="add-composite-index")
def unindexed_foreign_key(snapshot, metrics, config, *, spec):
    for t in audited_tables(snapshot, config):
        for fk in t.foreign_keys:
            if not fk.columns or _leads_with(t, fk.columns):
                continue
            cols = ", ".join(fk.columns)
            yield spec.finding(
                t, f"{t.qualified}({cols}) references {fk.ref_schema}.{fk.ref_table} and no index leads with "
                   f"{'it' if len(fk.columns) == 1 else 'them'} (constraint {fk.name})",
                f"dbguard generate-migration add-composite-index {table_arg(t.schema, t.name)} "
                + " ".join(shlex.quote(c) for c in fk.columns),
                object=fk.name, detail={"columns": list(fk.columns)})


def _rows(snapshot: Snapshot, table: Table, metrics: Optional[Mapping[str, Any]]) -> tuple[Optional[int], str]:
    m = metrics.get(table.qualified) if metrics else None
    if m is not None:
        rows = m.get("rows") if isinstance(m, Mapping) else getattr(m, "rows", None)
        if rows is not None:
            return int(rows), "measured"
    if table.kind == "partitioned":
        total, known = 0, False
        todo = [table.qualified]
        while todo:
            parent = todo.pop()
            for p in snapshot.tables:
                if p.parent == parent:
                    if p.kind == "partitioned":
                        todo.append(p.qualified)
                    elif p.row_estimate >= 0:
                        total += p.row_estimate
                        known = True
        return (total, "estimated") if known else (None, "unknown")
    if table.row_estimate < 0:
        return None, "unknown"
    return table.row_estimate, "estimated"


@rule("missing_tenant_index", "warning", "performance", "No index leads with the tenant column",
      "Every policy filters on the tenant column; without an index that leads with it, every query of a "
      "large table scans all tenants' rows.",
      fix_action="add-composite-index")
def missing_tenant_index(snapshot, metrics, config, *, spec):
    col = config.tenant.column
    threshold = config.tenant_index_min_rows
    for t in audited_tables(snapshot, config):
        if not has_tenant_column(t, config) or _leads_with(t, (col,)):
            continue
        rows, how = _rows(snapshot, t, metrics)
        if rows is None or rows < threshold:
            continue
        yield spec.finding(
            t, f"{t.qualified} has {rows:,} rows ({how}) and no index leads with {col}: tenant-filtered queries "
               f"scan the whole table",
            f"dbguard generate-migration add-composite-index {table_arg(t.schema, t.name)} {shlex.quote(col)}",
            object=col, detail={"rows": rows, "rows_source": how, "threshold": threshold})


@rule("auth_rls_initplan", "warning", "performance", "Auth function evaluated per row in a policy",
      "auth.uid(), auth.jwt(), auth.role(), auth.email() or current_setting() called directly in a policy "
      "is evaluated for every row. Wrapped in a scalar subquery, (select auth.uid()), PostgreSQL evaluates "
      "it once per query (an initPlan).",
      fix_action="fix-rls-policy", tags=("replaces-policy",))
def auth_rls_initplan(snapshot, metrics, config, *, spec):
    an = analyzer(snapshot, config)
    for t in audited_tables(snapshot, config):
        tcol = tenant_column(t, config)
        for p in t.policies:
            calls: list[str] = []
            for a in (using_analysis(an, t, p, tcol),
                      an.analyze(p.with_check, table=t, tenant_column=tcol) if p.with_check else None):
                if a is not None:
                    calls.extend(c for c in a.per_row_calls if c not in calls)
            if not calls:
                continue
            wrapped = ", ".join(f"(select {c})" if c != "current_setting()" else "(select current_setting(...))"
                                for c in calls)
            fix = f'ALTER POLICY {ident(p.name)} ON {qname(t.schema, t.name)} ... with each call wrapped: {wrapped}'
            if in_tenant_scope(snapshot, t, config):
                fix = f"{fix_rls_command(t)}  (or: {fix})"
            yield spec.finding(
                t, f'policy "{p.name}" on {t.qualified} calls {", ".join(calls)} outside a scalar subquery: '
                   f"evaluated once per row instead of once per query",
                fix, object=p.name, detail={"calls": calls})


@rule("multiple_permissive_policies", "warning", "performance", "Several permissive policies for one role and command",
      "PostgreSQL evaluates every permissive policy that applies to a role and command and ORs them; several "
      "of them cost a query each row's worth of work, and the widest one decides what is visible.")
def multiple_permissive_policies(snapshot, metrics, config, *, spec):
    bypass = bypass_roles(snapshot)
    known = {r.name for r in snapshot.roles}
    for t in audited_tables(snapshot, config):
        permissive = [p for p in t.policies if p.permissive]
        if len(permissive) < 2:
            continue
        roles = {r for p in permissive for r in p.roles if r != "public"}
        roles |= {r for r in (config.tenant.app_role, "anon", "authenticated") if r in known}
        roles -= bypass
        groups: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        for role in sorted(roles):
            for cmd in ALL_COMMANDS:
                hits = tuple(sorted(p.name for p in permissive
                                    if ("public" in p.roles or role in p.roles) and p.command in ("all", cmd)))
                if len(hits) > 1:
                    groups.setdefault(hits, []).append((role, cmd))
        for names, pairs in sorted(groups.items()):
            who = ", ".join(f"{cmd.upper()} as {role}" for role, cmd in pairs)
            yield spec.finding(
                t, f"{t.qualified} has {len(names)} permissive policies ({', '.join(names)}) for {who}: "
                   f"all are evaluated and OR-ed for every row",
                f"merge them into one policy per role and command (CREATE POLICY ... USING (a OR b)), or make "
                f"the extra conditions RESTRICTIVE; for tenant tables: {fix_rls_command(t)}",
                object=", ".join(names),
                detail={"policies": list(names), "roles": sorted({r for r, _ in pairs}),
                        "commands": sorted({c for _, c in pairs})})


def _normalized(idx: Index) -> str:
    d = idx.definition
    for name in (ident(idx.name), idx.name, '"' + idx.name.replace('"', '""') + '"'):
        marker = f" INDEX {name} ON "
        if marker in d:
            d = d.replace(marker, " INDEX ON ", 1)
            break
    return re.sub(r"^CREATE UNIQUE INDEX", "CREATE INDEX", d)


@rule("duplicate_index", "warning", "performance", "Duplicate index",
      "Two or more indexes with the same definition: every write maintains all of them, and they take space "
      "and cache, for no benefit.")
def duplicate_index(snapshot, metrics, config, *, spec):
    for t in audited_tables(snapshot, config):
        constraints = {c.name: c for c in t.constraints if c.kind in ("primary_key", "unique", "exclusion")}
        groups: dict[str, list[Index]] = {}
        for idx in t.indexes:
            if idx.valid:
                groups.setdefault(_normalized(idx), []).append(idx)
        for same in groups.values():
            if len(same) < 2:
                continue
            same.sort(key=lambda i: (not i.primary, i.name not in constraints, not i.unique, i.name))
            keep = same[0]
            for extra in same[1:]:
                if extra.name in constraints:
                    fix = (f"ALTER TABLE {qname(t.schema, t.name)} DROP CONSTRAINT {ident(extra.name)};"
                           f"  (check that no foreign key depends on it first)")
                else:
                    fix = f"DROP INDEX CONCURRENTLY IF EXISTS {qname(t.schema, extra.name)};"
                yield spec.finding(
                    t, f"index {extra.name} on {t.qualified} duplicates {keep.name}", fix, object=extra.name,
                    detail={"kept": keep.name, "definition": extra.definition})


@rule("no_primary_key", "info", "performance", "Table without a primary key",
      "Without a primary key rows cannot be addressed reliably: logical replication cannot replicate updates "
      "and deletes, and tools (and dbguard's fixes) cannot update rows one by one.")
def no_primary_key(snapshot, metrics, config, *, spec):
    for t in audited_tables(snapshot, config):
        if t.primary_key is not None:
            continue
        q = qname(t.schema, t.name)
        candidate = None
        for idx in t.indexes:
            if idx.unique and usable(idx) and idx.columns and None not in idx.columns and all(
                    (t.column(c) is not None and t.column(c).not_null) for c in idx.columns):
                candidate = idx
                break
        if candidate is not None:
            fix = f"ALTER TABLE {q} ADD PRIMARY KEY USING INDEX {ident(candidate.name)};"
        else:
            fix = f"ALTER TABLE {q} ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;  (or a primary key on existing unique, non-null columns)"
        yield spec.finding(t, f"{t.qualified} has no primary key", fix)
