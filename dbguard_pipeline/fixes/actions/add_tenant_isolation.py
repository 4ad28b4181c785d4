"""add-tenant-isolation TABLE: give a table that holds tenant data its own tenant column, live-safe.

Steps (each its own transaction or a no-transaction step): add the nullable column with the tenant context as
default; fill it in batches through the foreign-key path to a table that has it (or with --tenant-default);
NOT VALID CHECK and foreign key, then VALIDATE each; SET NOT NULL through the validated CHECK; index the
column concurrently; then row level security and the tenant policy (the fix-rls-policy part).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.actions.add_composite_index import partitioned_index
from dbguard_pipeline.fixes.actions.context import (
    Context,
    NothingToFix,
    check_role,
    constraint_names,
    create_policy,
    data_value,
    drop_policy,
    new_migration,
    relation_names,
    resolve_table,
    unique_name,
    why,
)
from dbguard_pipeline.fixes.actions.fix_rls_policy import RlsPlan, partitions_plan, reachable, rls_plan
from dbguard_pipeline.fixes.plan import Block, Migration
from dbguard_pipeline.fixes.sql import checked_type, pg_name, tenant_context
from dbguard_pipeline.model.schema import Column, Policy, Table
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.text import ident, literal, qname, quoted, quoted_qname

ACTION = "add-tenant-isolation"
BATCH_SIZE = 5_000


def _path_join(snap_path: list[tenancy.FkStep], table: Table, config: Config) -> tuple[str, str]:
    """FROM/JOIN text from ``table`` (alias s0) along the path, and the expression of the tenant at its end."""
    parts = [f"{quoted_qname(table.schema, table.name)} AS s0"]
    prev = "s0"
    for i, step in enumerate(snap_path, start=1):
        alias = f"p{i}"
        conds = " AND ".join(
            f"{alias}.{quoted(rc)} = {prev}.{quoted(cc)}"
            for cc, rc in zip(step.constraint.columns, step.constraint.ref_columns, strict=True)
        )
        parts.append(f"JOIN {quoted_qname(step.parent.schema, step.parent.name)} AS {alias} ON {conds}")
        prev = alias
    end_column = tenancy.tenant_column(snap_path[-1].parent, config)
    assert end_column is not None  # a tenant path ends at a table with the tenant column
    return "\n".join(parts), f"{prev}.{quoted(end_column)}"


def _dollar_tag(body: str) -> str:
    tag, n = "$dbguard$", 0
    while tag in body:
        n += 1
        tag = f"$dbguard{n}$"
    return tag


def _check_default(ctx: Context, tenants: Table, col_type: str, tenant_default: str) -> str:
    """The --tenant-default value as SQL, after checking (with a connection) that it names a tenant."""
    tm = ctx.config.tenant
    if ctx.dsn:
        try:
            found = data_value(
                ctx,
                sql.SQL("select count(*) from {t} where {k} = {v}::{ty}").format(
                    t=sql.Identifier(tenants.schema, tenants.name),
                    k=sql.Identifier(tm.tenants_key),
                    v=sql.Literal(tenant_default),
                    ty=sql.SQL(col_type),
                ),
            )
        except psycopg.errors.DataError:
            raise DbguardError(f"--tenant-default {tenant_default!r} is not a valid {col_type}") from None
        if not found:
            raise DbguardError(
                f"--tenant-default {tenant_default!r}: no such tenant in {qname(tenants.schema, tenants.name)}"
            )
    return f"{literal(tenant_default)}::{col_type}"


@dataclasses.dataclass
class _Backfill:
    statement: str  # the batched DO block (step 2)
    catch_up: list[str]  # the same fills once more, unbatched, under the lock of step 3
    source: str  # where the tenant comes from, for people


def _backfill(
    ctx: Context,
    table: Table,
    path: Optional[list[tenancy.FkStep]],
    default_sql: Optional[str],
    tenant_default: Optional[str],
) -> _Backfill:
    cfg = ctx.config
    q = quoted_qname(table.schema, table.name)
    col = quoted(cfg.tenant.column)
    pk = table.primary_key
    keys = list(pk.columns) if pk else None
    key_sel = ", ".join(f"s0.{quoted(k)} AS k{i}" for i, k in enumerate(keys)) if keys else "s0.ctid AS k0"
    key_match = " AND ".join(f"t0.{quoted(k)} = src.k{i}" for i, k in enumerate(keys)) if keys else "t0.ctid = src.k0"
    batches: list[str] = []
    catch_up: list[str] = []
    walk = ""
    if path:
        joins, tenant_expr = _path_join(path, table, cfg)
        unresolved = None
        if ctx.dsn:
            lefts = joins.replace("JOIN ", "LEFT JOIN ")
            unresolved = data_value(ctx, sql.SQL(f"select count(*) from {lefts} where {tenant_expr} is null"))
        if unresolved and default_sql is None:
            via = " -> ".join([table.qualified] + [s.parent.qualified for s in path])
            raise DbguardError(
                f"{unresolved} row{'s' if unresolved != 1 else ''} of {qname(table.schema, table.name)} reach no tenant "
                f"through {via} (NULL or dangling references): fix them first, or pass "
                "--tenant-default TENANT_ID to give them one tenant"
            )
        select = (
            f"SELECT {key_sel}, {tenant_expr} AS tenant\n"
            f"      FROM {joins.replace(chr(10), chr(10) + '      ')}\n"
            f"      WHERE s0.{col} IS NULL AND {tenant_expr} IS NOT NULL"
        )
        if keys and len(keys) == 1:
            walk = _key_walk(q, col, keys[0], table, joins, tenant_expr)
        else:
            batches.append(
                f"UPDATE {q} AS t0 SET {col} = src.tenant\n"
                f"    FROM ({select}\n      LIMIT {BATCH_SIZE}) AS src\n"
                f"    WHERE {key_match}"
            )
        catch_up.append(f"UPDATE {q} AS t0 SET {col} = src.tenant\n    FROM ({select}) AS src\n    WHERE {key_match}")
        source = "through " + " -> ".join([table.qualified] + [f"{s.parent.qualified}" for s in path])
    else:
        source = f"with the tenant {tenant_default}"
    if default_sql is not None:
        batches.append(
            f"UPDATE {q} AS t0 SET {col} = {default_sql}\n"
            f"    FROM (SELECT {key_sel} FROM {q} AS s0 WHERE s0.{col} IS NULL LIMIT {BATCH_SIZE}) AS src\n"
            f"    WHERE {key_match}"
        )
        catch_up.append(f"UPDATE {q} SET {col} = {default_sql} WHERE {col} IS NULL")
    loops = [
        "  LOOP\n    " + stmt.replace("\n", "\n    ") + ";\n"
        "    GET DIAGNOSTICS batch_rows = ROW_COUNT;\n"
        "    EXIT WHEN batch_rows = 0;\n"
        "    COMMIT;\n"
        "  END LOOP;"
        for stmt in batches
    ]
    declare = "  batch_rows bigint;\n"
    if walk:
        pk_type = next(c.type for c in table.columns if c.name == keys[0]) if keys else "bigint"
        declare += f"  last_key {pk_type};\n  next_key {pk_type};\n  high_key {pk_type};\n"
        loops.insert(0, walk)
    body = "\nDECLARE\n" + declare + "BEGIN\n" + "\n".join(loops) + "\nEND\n"
    tag = _dollar_tag(body)
    return _Backfill(f"DO {tag}{body}{tag}", catch_up, source)


def _key_walk(q: str, col: str, key: str, table: Table, joins: str, tenant_expr: str) -> str:
    """A walk over the primary key bounded by its maximum at the start: each batch reads the next
    BATCH_SIZE keys through the index, so rows written meanwhile are never rescanned (the fill trigger gives
    them their tenant) and the walk ends however fast a writer inserts."""
    k = quoted(key)
    joins_text = joins.replace(chr(10), chr(10) + "        ")
    return (
        f"  last_key := (SELECT {k} FROM {q} ORDER BY {k} LIMIT 1);\n"
        f"  high_key := (SELECT {k} FROM {q} ORDER BY {k} DESC LIMIT 1);\n"
        f"  IF last_key IS NOT NULL THEN\n"
        f"    UPDATE {q} AS t0 SET {col} = src.tenant\n"
        f"      FROM (SELECT s0.{k} AS k0, {tenant_expr} AS tenant\n"
        f"        FROM {joins_text}\n"
        f"        WHERE s0.{k} = last_key AND s0.{col} IS NULL) AS src\n"
        f"      WHERE t0.{k} = src.k0;\n"
        f"    COMMIT;\n"
        f"    LOOP\n"
        f"      SELECT b.k INTO next_key FROM (SELECT {k} AS k FROM {q} WHERE {k} > last_key AND {k} <= high_key\n"
        f"        ORDER BY {k} LIMIT {BATCH_SIZE}) AS b ORDER BY b.k DESC LIMIT 1;\n"
        f"      EXIT WHEN next_key IS NULL;\n"
        f"      UPDATE {q} AS t0 SET {col} = src.tenant\n"
        f"        FROM (SELECT s0.{k} AS k0, {tenant_expr} AS tenant\n"
        f"          FROM {joins_text}\n"
        f"          WHERE s0.{k} > last_key AND s0.{k} <= next_key AND s0.{col} IS NULL) AS src\n"
        f"        WHERE t0.{k} = src.k0;\n"
        f"      last_key := next_key;\n"
        f"      COMMIT;\n"
        f"    END LOOP;\n"
        f"  END IF;"
    )


def fill_trigger(
    ctx: Context, table: Table, path: list[tenancy.FkStep], column: str
) -> tuple[list[str], list[str], str]:
    """A BEFORE INSERT trigger that gives a row without tenant the tenant of its parent row (through the
    foreign-key path): rows written during the backfill need no rescan, and writers that send no tenant
    context keep working after the NOT NULL. It stays after the migration (the rollback drops it)."""
    cfg = ctx.config
    taken = {f.name for f in ctx.snapshot.functions if f.schema == table.schema}
    fn = unique_name(taken, f"{table.name}_{column}", "fill", "fn")
    trg = pg_name(f"{table.name}_{column}", "fill")
    first = path[0].constraint
    froms = [f"{quoted_qname(path[0].parent.schema, path[0].parent.name)} AS p1"]
    for i, step in enumerate(path[1:], start=2):
        on = " AND ".join(
            f"p{i}.{quoted(rc)} = p{i - 1}.{quoted(cc)}"
            for cc, rc in zip(step.constraint.columns, step.constraint.ref_columns, strict=True)
        )
        froms.append(f"JOIN {quoted_qname(step.parent.schema, step.parent.name)} AS p{i} ON {on}")
    where = " AND ".join(
        f"p1.{quoted(rc)} = NEW.{quoted(cc)}" for cc, rc in zip(first.columns, first.ref_columns, strict=True)
    )
    end_column = tenancy.tenant_column(path[-1].parent, cfg)
    body = (
        f"\nBEGIN\n  IF NEW.{quoted(column)} IS NULL THEN\n"
        f"    NEW.{quoted(column)} := (SELECT p{len(path)}.{quoted(end_column or column)} FROM {' '.join(froms)} "
        f"WHERE {where} LIMIT 1);\n  END IF;\n  RETURN NEW;\nEND\n"
    )
    tag = _dollar_tag(body)
    qfn = quoted_qname(table.schema, fn)
    q = quoted_qname(table.schema, table.name)
    fwd = [
        f"CREATE OR REPLACE FUNCTION {qfn}() RETURNS trigger LANGUAGE plpgsql\n"
        f"    SET search_path = pg_catalog, pg_temp AS {tag}{body}{tag}",
        f"CREATE OR REPLACE TRIGGER {quoted(trg)} BEFORE INSERT ON {q} FOR EACH ROW EXECUTE FUNCTION {qfn}()",
    ]
    back = [
        f"DROP TRIGGER IF EXISTS {quoted(trg)} ON {q}",
        f"-- squawk-ignore ban-drop-function\nDROP FUNCTION IF EXISTS {qfn}()",
    ]
    return fwd, back, trg


def _partitions(ctx: Context, table: Table) -> list[Table]:
    """The partitions of a partitioned table ([] for any other), after checking the action can be made safe."""
    if table.kind != "partitioned":
        return []
    parts = sorted((t for t in ctx.snapshot.tables if t.parent == table.qualified), key=lambda t: t.qualified)
    if any(p.kind == "partitioned" for p in parts):
        raise DbguardError(
            f"{qname(table.schema, table.name)} has sub-partitioned partitions: add-tenant-isolation handles one level of partitions"
        )
    if table.primary_key is None:
        raise DbguardError(
            f"{qname(table.schema, table.name)} is partitioned and has no primary key: its rows cannot be filled in batches by key "
            "(a row address is not unique across partitions); add a primary key first"
        )
    if not parts:
        raise DbguardError(
            f"{qname(table.schema, table.name)} is partitioned and has no partition yet: add the column by hand"
        )
    return parts


def _partition_policies(ctx: Context, table: Table, rls: RlsPlan) -> None:
    """Every partition the application role can query gets RLS and the parent's final policies (a query that
    names a partition gets the partition's policies, not its parent's). A partition's own copy of a policy the
    migration rewrites is rewritten too (the rollback restores it); a policy of a partition that the parent
    does not have is refused: the new column would leave it unpinned."""
    final = {p.name: p for p in rls.final}
    original = {p.name: p for p in table.policies}
    for part in sorted((t for t in ctx.snapshot.tables if t.parent == table.qualified), key=lambda t: t.qualified):
        if not reachable(ctx, part):
            continue
        for p in part.policies:
            if p.name not in final:
                raise DbguardError(
                    f"partition {qname(part.schema, part.name)} has a policy of its own ({p.name!r}) that {qname(table.schema, table.name)} does "
                    "not have: it would not pin the new column; drop it or give the parent the same policy first"
                )
            new = final[p.name]
            if _same(p, new):
                continue
            if p.name not in original or not _same(p, original[p.name]):
                raise DbguardError(
                    f"partition {qname(part.schema, part.name)} has its own version of the policy {p.name!r}: make it the "
                    f"parent's first"
                )
            rls.forward += [drop_policy(part.schema, part.name, p.name), create_policy(part.schema, part.name, new)]
            rls.rollback[:0] = [drop_policy(part.schema, part.name, p.name), create_policy(part.schema, part.name, p)]
            rls.what.append(
                f"partition {qname(part.schema, part.name)}: rewrite its copy of policy {quoted(p.name)} the same way"
            )
    parts = partitions_plan(ctx, table, rls.final)
    rls.forward += parts.forward
    rls.rollback[:0] = parts.rollback
    rls.what += parts.what
    rls.undo += parts.undo


def _same(a: Policy, b: Policy) -> bool:
    return (a.permissive, a.command, sorted(a.roles), a.using, a.with_check) == (
        b.permissive,
        b.command,
        sorted(b.roles),
        b.using,
        b.with_check,
    )


def plan_add_tenant_isolation(ctx: Context, table_name: str, tenant_default: Optional[str] = None) -> Migration:
    snap, cfg = ctx.snapshot, ctx.config
    tm = cfg.tenant
    table = resolve_table(snap, table_name)
    if tenancy.is_tenants_table(table, cfg):
        raise DbguardError(
            f"{qname(table.schema, table.name)} is the tenants table itself (config tenant.tenants_table)"
        )
    column = tm.column
    parties = tenancy.party_columns(snap, table, cfg)
    if parties and table.column(column) is None:
        raise DbguardError(
            f"{qname(table.schema, table.name)} belongs to more than one tenant ({', '.join(parties)} each name one): "
            f"it is not single-tenant data, so no {column} column is added (that would pick one "
            "party and lock the other out); keep a policy that pins every party column, and name "
            f"them in the config: tenant.table_tenant_columns: {{{table.qualified}: [...]}}"
        )
    if table.column(column) is not None:
        raise NothingToFix(
            f"{qname(table.schema, table.name)} already has a {column} column: for its policies run fix-rls-policy, "
            "for its foreign key add-foreign-key"
        )
    tenants = snap.table(tm.tenants_qualified)
    tenants_key = tenants.column(tm.tenants_key) if tenants is not None else None
    if tenants is None or tenants_key is None:
        raise DbguardError(
            f"the tenants table {qname(tm.tenants_schema, tm.tenants_name)}({ident(tm.tenants_key)}) (config tenant.tenants_table) "
            f"is not in {snap.database}"
        )
    col_type = checked_type(tenants_key.type)
    check_role(ctx)
    parts = _partitions(ctx, table)
    path = tenancy.tenant_path(snap, table, cfg)
    default_sql = _check_default(ctx, tenants, col_type, tenant_default) if tenant_default is not None else None
    if path is None and default_sql is None:
        raise DbguardError(
            f"{qname(table.schema, table.name)} has no foreign-key path to a table with a {column} column (or to "
            f"{qname(tenants.schema, tenants.name)}), so its rows cannot be given a tenant: add that foreign key first, "
            "or pass --tenant-default TENANT_ID to give every existing row one tenant"
        )
    fill = _backfill(ctx, table, path, default_sql, tenant_default)
    q = quoted_qname(table.schema, table.name)
    col = quoted(column)

    taken = constraint_names(table) | relation_names(snap, table.schema)
    for part in parts:
        taken |= constraint_names(part)
    fk_name = unique_name(taken, f"{table.name}_{column}", "fkey", "fk")
    chk_name = unique_name(taken | {fk_name}, f"{table.name}_{column}", "not_null", "nn")
    idx_name = unique_name(
        relation_names(snap, table.schema) | {fk_name, chk_name}, f"{table.name}_{column}", "idx", "ix"
    )

    references = (
        f"FOREIGN KEY ({col}) REFERENCES {quoted_qname(tenants.schema, tenants.name)} ({quoted(tm.tenants_key)})"
    )
    # PostgreSQL refuses a NOT VALID foreign key on a partitioned table: each partition gets its own NOT VALID
    # key, validated without blocking writes; the key added on the parent afterwards attaches them (no scan)
    fk_tables = [(part.schema, part.name) for part in parts] if parts else [(table.schema, table.name)]
    catch_up = [
        f"ALTER TABLE {q} ADD CONSTRAINT {quoted(chk_name)} CHECK ({col} IS NOT NULL) NOT VALID",
        *(
            f"ALTER TABLE {quoted_qname(s, n)} ADD CONSTRAINT {quoted(fk_name)} {references} NOT VALID"
            for s, n in fk_tables
        ),
        *fill.catch_up,
    ]

    # The table as it will be (with the new column), for the RLS part.
    future = dataclasses.replace(table, columns=table.columns + (Column(name=column, type=col_type, not_null=True),))
    rls = rls_plan(ctx, future, column, col_type, adding_column=True) or RlsPlan(
        [], [], [], [], [], list(table.policies)
    )
    if parts:
        _partition_policies(ctx, future, rls)

    trigger_fwd: list[str] = []
    trigger_back: list[str] = []
    trigger_name = ""
    if path:
        trigger_fwd, trigger_back, trigger_name = fill_trigger(ctx, table, path, column)
    if parts:
        index_fwd, index_back = partitioned_index(ctx, table, (column,), idx_name, set(taken) | {fk_name, chk_name})
        index_fwd[0] = dataclasses.replace(index_fwd[0], comment="7. " + (index_fwd[0].comment or ""))
    else:
        index_fwd = [
            Block(
                (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quoted(idx_name)} ON {q} ({col})",),
                transactional=False,
                untimed="all",
                comment="7. index the tenant column without blocking writes",
            )
        ]
        index_back = [
            Block(
                (f"DROP INDEX CONCURRENTLY IF EXISTS {quoted_qname(table.schema, idx_name)}",),
                transactional=False,
                untimed="all",
            )
        ]
    m = new_migration(ctx, ACTION, table)
    m.params = {"tenant_default": tenant_default}
    if trigger_name:
        m.notes.append(
            f"writers that send no tenant context keep working: the trigger {trigger_name} gives a new row "
            "the tenant of its parent row (it stays after the migration)"
        )
    m.forward = [
        Block(
            (
                f"ALTER TABLE {q} ADD COLUMN IF NOT EXISTS {col} {col_type}",
                f"ALTER TABLE {q} ALTER COLUMN {col} SET DEFAULT {tenant_context(cfg, col_type, for_default=True)}",
                *trigger_fwd,
            ),
            comment="1. the tenant column (nullable, no rewrite); new rows take the tenant from the context"
            + ("\n   or, without one, from their parent row (the fill trigger)" if trigger_fwd else ""),
        ),
        Block(
            (fill.statement,),
            transactional=False,
            untimed="statement",
            comment=f"2. fill it {fill.source}, {BATCH_SIZE} rows per transaction",
        ),
        Block(
            tuple(catch_up),
            comment="3. from now on every row needs a tenant (checked for new rows only), and the rows written\n"
            "   during step 2 are filled under the same lock",
        ),
        *(
            Block(
                (f"ALTER TABLE {quoted_qname(s, n)} VALIDATE CONSTRAINT {quoted(fk_name)}",),
                comment="4. check the existing rows reference a tenant, without blocking reads or writes"
                + (f" (partition {s}.{n})" if parts else ""),
            )
            for s, n in fk_tables
        ),
        *(
            [
                Block(
                    (
                        "-- squawk-ignore constraint-missing-not-valid, adding-foreign-key-constraint\n"
                        f"ALTER TABLE {q} ADD CONSTRAINT {quoted(fk_name)} {references}",
                    ),
                    comment="4b. the key on the partitioned table: it attaches each partition's validated key "
                    "(no scan)",
                )
            ]
            if parts
            else []
        ),
        Block(
            (f"ALTER TABLE {q} VALIDATE CONSTRAINT {quoted(chk_name)}",),
            comment="5. check every row has a tenant, without blocking reads or writes",
        ),
        Block(
            (
                f"ALTER TABLE {q} ALTER COLUMN {col} SET NOT NULL",
                f"-- squawk-ignore ban-drop-constraint\nALTER TABLE {q} DROP CONSTRAINT IF EXISTS {quoted(chk_name)}",
            ),
            comment="6. NOT NULL without a scan (the validated CHECK proves it); the CHECK is then redundant",
        ),
        *index_fwd,
    ]
    m.rollback = [
        *index_back,
        Block(
            (
                f"-- squawk-ignore ban-drop-constraint\nALTER TABLE {q} DROP CONSTRAINT IF EXISTS {quoted(fk_name)}",
                *(
                    f"-- squawk-ignore ban-drop-constraint\nALTER TABLE {quoted_qname(s, n)} "
                    f"DROP CONSTRAINT IF EXISTS {quoted(fk_name)}"
                    for s, n in (fk_tables if parts else [])
                ),
                f"-- squawk-ignore ban-drop-constraint\nALTER TABLE {q} DROP CONSTRAINT IF EXISTS {quoted(chk_name)}",
                f"-- squawk-ignore ban-drop-column\nALTER TABLE {q} DROP COLUMN IF EXISTS {col}",
            ),
            comment="the column and its constraints did not exist before the forward migration",
        ),
    ]
    if trigger_back:
        m.rollback.insert(1, Block(tuple(trigger_back), comment="the fill trigger and its function"))
    if rls.forward:
        m.forward.append(Block(tuple(rls.forward), comment="8. row level security and the tenant policy"))
        m.rollback.insert(0, Block(tuple(rls.rollback), comment="policies and RLS flags as they were"))
    m.what = [
        f"add column {column} {col_type} to {qname(table.schema, table.name)}, default: the current tenant",
        f"fill it {fill.source} in batches of {BATCH_SIZE}"
        + (f"; the trigger {trigger_name} fills rows inserted without a tenant" if trigger_name else ""),
        f"foreign key {quoted(fk_name)} -> {qname(tenants.schema, tenants.name)}({tm.tenants_key}), NOT VALID then VALIDATE"
        + (" on each partition, then on the partitioned table (attaching theirs)" if parts else ""),
        f"NOT NULL through the validated CHECK {quoted(chk_name)}",
        f"index {quoted(idx_name)} on ({column}) concurrently"
        + (": ON ONLY the partitioned table, concurrently on each partition, then ATTACH PARTITION" if parts else ""),
    ] + rls.what
    m.undo = (
        list(reversed(rls.undo))
        + [f"drop index {quoted(idx_name)}"]
        + ([f"drop the trigger {trigger_name} and its function"] if trigger_name else [])
        + [f"drop the column {column} and its constraints"]
    )
    findings = ctx.table_findings(table, ("missing_tenant_column",)) + rls.findings
    m.why, m.fixes = why(findings), [f.cache_key for f in findings]
    if not findings:
        m.why = [
            f"{qname(table.schema, table.name)} holds tenant data (it reaches {qname(tenants.schema, tenants.name)} through foreign keys) but has no "
            f"{column} column"
            if path
            else f"{qname(table.schema, table.name)} has no {column} column"
        ]
    return m
