"""add-composite-index TABLE COL1 [COL2 ...]: CREATE INDEX CONCURRENTLY for each column set no valid,
non-partial index already leads with (in any order: ``semantics.indexes``, the same judgment as the rules)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from dbguard_pipeline.errors import DbguardError, NotFoundError
from dbguard_pipeline.fixes.actions.context import (
    Context,
    NothingToFix,
    new_migration,
    relation_names,
    resolve_table,
    unique_name,
    why,
)
from dbguard_pipeline.fixes.plan import Block, Migration
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.semantics.indexes import covering_index, leads_with
from dbguard_pipeline.text import ident, qname, quoted, quoted_qname

ACTION = "add-composite-index"


def finding_columns(table: Table, f: Finding) -> Optional[tuple[str, ...]]:
    """The columns an index finding is about: its detail, its object (a constraint or a column), or None."""
    detail_cols = (f.detail or {}).get("columns")
    if detail_cols:
        return tuple(detail_cols)
    if f.object:
        for c in table.constraints:
            if c.name == f.object:
                return c.columns
        if table.column(f.object):
            return (f.object,)
        parts = tuple(p.strip() for p in f.object.split(","))
        if all(table.column(p) for p in parts):
            return parts
    return None


def partitioned_index(
    ctx: Context, table: Table, cols: tuple[str, ...], name: str, taken: set[str]
) -> tuple[list[Block], list[Block]]:
    """PostgreSQL refuses CREATE INDEX CONCURRENTLY on a partitioned table: an invalid index ON ONLY the
    parent (instant), the partitions' indexes built concurrently, each attached (the parent's becomes valid
    once every partition has one). Partitions that are themselves partitioned are refused (one level only)."""
    q = quoted_qname(table.schema, table.name)
    col_sql = ", ".join(quoted(c) for c in cols)
    parts = sorted((t for t in ctx.snapshot.tables if t.parent == table.qualified), key=lambda t: t.qualified)
    if any(p.kind == "partitioned" for p in parts):
        raise DbguardError(
            f"{qname(table.schema, table.name)} has sub-partitioned partitions: index them one level at a time"
        )
    fwd = [
        Block(
            (
                f"-- squawk-ignore require-concurrent-index-creation\n"
                f"CREATE INDEX IF NOT EXISTS {quoted(name)} ON ONLY {q} ({col_sql})",
            ),
            comment=f"index ({', '.join(ident(c) for c in cols)}) on the partitioned table only (invalid until every "
            "partition's index is attached)",
        )
    ]
    back = [
        Block(
            (
                f"-- squawk-ignore require-concurrent-index-deletion\n"
                f"DROP INDEX IF EXISTS {quoted_qname(table.schema, name)}",
            ),
            comment="dropping the partitioned index drops the partitions' indexes attached to it",
        )
    ]
    for part in parts:
        pname = unique_name(
            taken | relation_names(ctx.snapshot, part.schema), f"{part.name}_{'_'.join(cols)}", "idx", part.qualified
        )
        taken.add(pname)
        existing = covering_index(part, cols)
        if existing is not None:
            raise DbguardError(
                f"partition {qname(part.schema, part.name)} already has the index {existing.name!r} on "
                f"({', '.join(ident(c) for c in cols)}): create the partitioned index ON ONLY {qname(table.schema, table.name)} and "
                "ATTACH that index by hand (a generated rollback would drop it)"
            )
        fwd.append(
            Block(
                (
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quoted(pname)} ON "
                    f"{quoted_qname(part.schema, part.name)} ({col_sql})",
                ),
                transactional=False,
                untimed="all",
                comment=f"partition {qname(part.schema, part.name)}, without blocking writes",
            )
        )
        back.append(
            Block(
                (f"DROP INDEX CONCURRENTLY IF EXISTS {quoted_qname(part.schema, pname)}",),
                transactional=False,
                untimed="all",
                comment="left over only when the forward file stopped before attaching it",
            )
        )
        fwd.append(
            Block(
                (f"ALTER INDEX {quoted_qname(table.schema, name)} ATTACH PARTITION {quoted_qname(part.schema, pname)}",)
            )
        )
    return fwd, back


def plan_add_composite_index(
    ctx: Context, table_name: str, column_sets: Sequence[Sequence[str]], findings: Optional[list[Finding]] = None
) -> Migration:
    table = resolve_table(ctx.snapshot, table_name)
    if not column_sets or not all(column_sets):
        raise DbguardError("add-composite-index needs at least one column: add-composite-index TABLE COL1 [COL2 ...]")
    taken = relation_names(ctx.snapshot, table.schema)
    q = quoted_qname(table.schema, table.name)
    fwd_blocks: list[Block] = []
    back_blocks: list[Block] = []
    what: list[str] = []
    undo: list[str] = []
    skipped: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for column_set in column_sets:
        cols = tuple(column_set)
        missing = [c for c in cols if table.column(c) is None]
        if missing:
            raise NotFoundError(
                f"{qname(table.schema, table.name)} has no column {', '.join(repr(c) for c in missing)}"
            )
        if len(set(cols)) != len(cols):
            raise DbguardError(f"column listed twice in {', '.join(cols)}")
        if cols in seen:
            continue
        seen.add(cols)
        if covering_index(table, cols) is not None:
            skipped.append(", ".join(cols))
            continue
        for ix in table.indexes:
            if not ix.valid and leads_with(ix, cols):
                raise DbguardError(
                    f"{qname(table.schema, table.name)} has an invalid index {ix.name!r} on ({', '.join(ident(c) for c in cols)}) left "
                    f"by a failed concurrent build: DROP INDEX CONCURRENTLY "
                    f"{quoted_qname(table.schema, ix.name)} first"
                )
        name = unique_name(taken, f"{table.name}_{'_'.join(cols)}", "idx", "\x00".join(cols))
        taken.add(name)
        col_sql = ", ".join(quoted(c) for c in cols)
        if table.kind == "partitioned":
            f, b = partitioned_index(ctx, table, cols, name, taken)
            fwd_blocks += f
            back_blocks[:0] = b
            what.append(
                f"create index {quoted(name)} on {qname(table.schema, table.name)} ({', '.join(ident(c) for c in cols)}): ON ONLY the "
                f"partitioned table, concurrently on each partition, then ATTACH PARTITION"
            )
            undo.insert(0, f"drop index {quoted(name)} (and the partitions' indexes attached to it)")
            continue
        fwd_blocks.append(
            Block(
                (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quoted(name)} ON {q} ({col_sql})",),
                transactional=False,
                untimed="all",
                comment=f"index ({', '.join(ident(c) for c in cols)}) without blocking writes",
            )
        )
        back_blocks.insert(
            0,
            Block(
                (f"DROP INDEX CONCURRENTLY IF EXISTS {quoted_qname(table.schema, name)}",),
                transactional=False,
                untimed="all",
            ),
        )
        what.append(
            f"create index {quoted(name)} on {qname(table.schema, table.name)} ({', '.join(ident(c) for c in cols)}) concurrently"
        )
        undo.insert(0, f"drop index {quoted(name)} concurrently")
    if not fwd_blocks:
        raise NothingToFix(
            f"{qname(table.schema, table.name)} already has an index leading with ({'; '.join(skipped)}): nothing to fix"
        )
    m = new_migration(ctx, ACTION, table)
    m.params = {"column_sets": [list(c) for c in sorted(seen)]}
    if findings is None:
        firsts = {s[0] for s in seen}
        findings = [
            f
            for f in ctx.table_findings(table, ("unindexed_foreign_key", "missing_tenant_index"))
            if set(finding_columns(table, f) or ()) & firsts
        ]
    m.what, m.undo, m.forward, m.rollback = what, undo, fwd_blocks, back_blocks
    m.why, m.fixes = why(findings), [f.cache_key for f in findings]
    return m
