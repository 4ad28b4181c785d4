"""add-foreign-key TABLE [REFTABLE [COLUMN]]: ADD CONSTRAINT ... NOT VALID, then VALIDATE, plus an index on the
referencing column when none leads with it. Without REFTABLE the reference is inferred: the tenant column
without its foreign key, else the one ``<name>_id`` column whose parent ``semantics.references`` finds."""

from __future__ import annotations

from typing import Optional

from psycopg import sql

from dbguard_pipeline.errors import DbguardError, NotFoundError
from dbguard_pipeline.fixes.actions.context import (
    Context,
    NothingToFix,
    constraint_names,
    data_value,
    new_migration,
    relation_names,
    resolve_table,
    unique_name,
    why,
)
from dbguard_pipeline.fixes.plan import Block, Migration
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.model.schema import Constraint, Table
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.semantics.indexes import covering_index
from dbguard_pipeline.semantics.references import TableNames, infer_parent, referenced_key
from dbguard_pipeline.text import qname, quoted, quoted_qname

ACTION = "add-foreign-key"


def _has_fk(table: Table, cols: tuple[str, ...], ref: Table) -> Optional[Constraint]:
    for fk in table.foreign_keys:
        if fk.columns == cols and fk.ref_schema == ref.schema and fk.ref_table == ref.name:
            return fk
    return None


def _column_for(ctx: Context, table: Table, ref: Table) -> str:
    """The column of ``table`` that references ``ref`` when the user named only the table."""
    cfg = ctx.config
    guesses = []
    if tenancy.is_tenants_table(ref, cfg):
        guesses.append(cfg.tenant.column)
    base = ref.name
    for suffix in ("ies", "es", "s"):
        if base.endswith(suffix):
            guesses.append((base[: -len(suffix)] + ("y" if suffix == "ies" else "")) + "_id")
    guesses.append(base + "_id")
    column = next((g for g in guesses if table.column(g)), None)
    if column is None:
        raise DbguardError(
            f"cannot tell which column of {qname(table.schema, table.name)} references {qname(ref.schema, ref.name)}: "
            f"name it: add-foreign-key {qname(table.schema, table.name)} {qname(ref.schema, ref.name)} COLUMN"
        )
    return column


def _infer_fk(ctx: Context, table: Table, ref_name: Optional[str], column: Optional[str]) -> tuple[str, Table, str]:
    snap, cfg = ctx.snapshot, ctx.config
    tenants = snap.table(cfg.tenant.tenants_qualified)
    if ref_name:
        ref = resolve_table(snap, ref_name)
        key = cfg.tenant.tenants_key if tenancy.is_tenants_table(ref, cfg) else referenced_key(ref)
        if key is None or ref.column(key) is None:
            raise DbguardError(
                f"{qname(ref.schema, ref.name)} has no single-column primary key or unique key to reference"
            )
        return column or _column_for(ctx, table, ref), ref, key
    if (
        column is None
        and tenants is not None
        and table.column(cfg.tenant.column)
        and not tenancy.is_tenants_table(table, cfg)
        and not _has_fk(table, (cfg.tenant.column,), tenants)
    ):
        return cfg.tenant.column, tenants, cfg.tenant.tenants_key
    names = TableNames(snap)
    candidates: list[tuple[str, Table, str]] = []
    for col in table.columns:
        if column and col.name != column:
            continue
        if not col.name.endswith("_id") or any(fk.columns == (col.name,) for fk in table.foreign_keys):
            continue
        if col.name == cfg.tenant.column and tenants is not None:
            candidates.append((col.name, tenants, cfg.tenant.tenants_key))
            continue
        found = infer_parent(snap, table, col.name, names)
        if found is not None:
            candidates.append((col.name, *found))
    if not candidates:
        if column is None and tenants is not None and table.column(cfg.tenant.column):
            fk = _has_fk(table, (cfg.tenant.column,), tenants)
            if fk is not None:
                raise NothingToFix(
                    f"{qname(table.schema, table.name)}.{cfg.tenant.column} already references {qname(tenants.schema, tenants.name)} "
                    f"({fk.name}) and no other column lacks its foreign key: nothing to fix"
                )
        if column:
            raise DbguardError(
                f"cannot infer the table {qname(table.schema, table.name)}.{column} references: name it: "
                f"add-foreign-key {qname(table.schema, table.name)} REFTABLE {column}"
            )
        raise NothingToFix(
            f"{qname(table.schema, table.name)}: no column without a foreign key whose referenced table can be "
            "inferred (name it: add-foreign-key TABLE REFTABLE [COLUMN])"
        )
    if len(candidates) > 1:
        names_text = ", ".join(f"{c} -> {r.qualified}" for c, r, _ in candidates)
        raise DbguardError(
            f"{qname(table.schema, table.name)} has several columns without a foreign key ({names_text}): name the "
            "referenced table: add-foreign-key TABLE REFTABLE [COLUMN]"
        )
    return candidates[0]


def plan_add_foreign_key(
    ctx: Context,
    table_name: str,
    ref_name: Optional[str] = None,
    column: Optional[str] = None,
    findings: Optional[list[Finding]] = None,
) -> Migration:
    table = resolve_table(ctx.snapshot, table_name)
    if column is not None and table.column(column) is None:
        raise NotFoundError(f"{qname(table.schema, table.name)} has no column {column!r}")
    column, ref, key = _infer_fk(ctx, table, ref_name, column)
    existing = _has_fk(table, (column,), ref)
    if existing is not None:
        state = "" if existing.validated else " (NOT VALID: run ALTER TABLE ... VALIDATE CONSTRAINT to check old rows)"
        raise NothingToFix(
            f"{qname(table.schema, table.name)}.{column} already references {qname(ref.schema, ref.name)}: {existing.name}{state}"
        )
    child_col, ref_col = table.column(column), ref.column(key)
    if child_col is None:
        raise NotFoundError(f"{qname(table.schema, table.name)} has no column {column!r}")
    if ref_col is None:
        raise NotFoundError(f"{qname(ref.schema, ref.name)} has no column {key!r}")
    if child_col.type != ref_col.type:
        raise DbguardError(
            f"{qname(table.schema, table.name)}.{column} is {child_col.type} but {qname(ref.schema, ref.name)}.{key} is "
            f"{ref_col.type}: the foreign key needs the same type"
        )
    # Rows that would make VALIDATE fail: report them before writing anything.
    orphans = data_value(
        ctx,
        sql.SQL(
            "select count(*) from {t} c where c.{col} is not null and not exists "
            "(select 1 from {r} p where p.{key} = c.{col})"
        ).format(
            t=sql.Identifier(table.schema, table.name),
            col=sql.Identifier(column),
            r=sql.Identifier(ref.schema, ref.name),
            key=sql.Identifier(key),
        ),
    )
    if orphans:
        raise DbguardError(
            f"cannot add the foreign key {qname(table.schema, table.name)}({column}) -> {qname(ref.schema, ref.name)}({key}): "
            f"{orphans} row{'s' if orphans != 1 else ''} of {qname(table.schema, table.name)} reference a missing "
            f"{qname(ref.schema, ref.name)} row and would make VALIDATE fail; fix or delete them first"
        )
    if orphans is None:
        ctx.notes.append("orphans were not counted (no database connection): VALIDATE fails if any exist")
    q = quoted_qname(table.schema, table.name)
    fk_name = unique_name(
        constraint_names(table) | relation_names(ctx.snapshot, table.schema),
        f"{table.name}_{column}",
        "fkey",
        ref.qualified,
    )
    m = new_migration(ctx, ACTION, table)
    m.notes = list(ctx.notes)
    m.params = {"ref": ref.qualified, "column": column}
    m.forward = [
        Block(
            (
                f"ALTER TABLE {q} ADD CONSTRAINT {quoted(fk_name)} FOREIGN KEY ({quoted(column)}) "
                f"REFERENCES {quoted_qname(ref.schema, ref.name)} ({quoted(key)}) NOT VALID",
            ),
            comment="new and updated rows are checked from now on; the short lock does not scan the table",
        ),
        Block(
            (f"ALTER TABLE {q} VALIDATE CONSTRAINT {quoted(fk_name)}",),
            comment="check the existing rows without blocking reads or writes",
        ),
    ]
    m.what = [
        f"add foreign key {quoted(fk_name)}: {qname(table.schema, table.name)}({column}) -> {qname(ref.schema, ref.name)}({key}), "
        "NOT VALID then VALIDATE"
    ]
    m.undo = []
    m.rollback = []
    if covering_index(table, (column,)) is None:
        idx = unique_name(relation_names(ctx.snapshot, table.schema), f"{table.name}_{column}", "idx", column)
        m.forward.append(
            Block(
                (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quoted(idx)} ON {q} ({quoted(column)})",),
                transactional=False,
                untimed="all",
                comment=f"index the referencing column ({column})",
            )
        )
        m.rollback.append(
            Block(
                (f"DROP INDEX CONCURRENTLY IF EXISTS {quoted_qname(table.schema, idx)}",),
                transactional=False,
                untimed="all",
            )
        )
        m.what.append(f"create index {quoted(idx)} on ({column}) concurrently (no index leads with it)")
        m.undo.append(f"drop index {quoted(idx)} concurrently")
    m.rollback.append(
        Block(
            (f"-- squawk-ignore ban-drop-constraint\nALTER TABLE {q} DROP CONSTRAINT IF EXISTS {quoted(fk_name)}",),
            comment="the constraint did not exist before the forward migration",
        )
    )
    m.undo.append(f"drop constraint {quoted(fk_name)}")
    if findings is None:
        tenant_fk = column == ctx.config.tenant.column
        rules = ("tenant_fk_missing", "orphaned_rows") if tenant_fk else ("orphaned_rows",)
        findings = [
            f
            for f in ctx.table_findings(table, rules)
            if f.object in (None, column, fk_name) or f.rule == "tenant_fk_missing"
        ]
        if tenant_fk:
            findings = [f for f in findings if f.rule == "tenant_fk_missing"]
    m.why, m.fixes = why(findings), [f.cache_key for f in findings]
    return m
