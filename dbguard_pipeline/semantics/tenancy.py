"""The tenant model applied to a snapshot: which tables hold tenant data, their tenant column, and the
foreign-key paths that tie a table without a tenant column to one that has it.

Used by the rules, the isolation probe and the migration generator, so that all three agree on what a
tenant table is. Pure functions of (snapshot, config): a caller that asks the same question many times keeps
the answers itself (the rules share them through :class:`dbguard_pipeline.rules.context.RuleContext`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.schema import Constraint, Snapshot, Table


def is_partition(table: Table) -> bool:
    """A partition at any level: a leaf, or a partitioned table that is itself a partition (PostgreSQL has no
    partitioned table that is an inheritance child, so a partitioned table with a parent is a partition).
    Inheritance children (``INHERITS``) are plain tables: their rows are their own, not their parent's."""
    return table.kind == "partition" or (table.kind == "partitioned" and table.parent is not None)


def partition_root(snapshot: Snapshot, table: Table) -> Table:
    """The partitioned table at the top of a partition's tree (the table itself when it is no partition)."""
    seen = {table.qualified}
    current = table
    while is_partition(current) and current.parent:
        parent = snapshot.table(current.parent)
        if parent is None or parent.qualified in seen:
            break
        seen.add(parent.qualified)
        current = parent
    return current


def audited_tables(snapshot: Snapshot, config: Config) -> list[Table]:
    """Tables the audit looks at: every snapshot table outside the excluded (platform-managed) schemas,
    unless the config names schemas explicitly. Partitions, at every level, are audited through their root
    (a partitioned table's rows are its partitions' rows: data metrics count them once, there); the RLS rules
    add the partitions the application can reach themselves (:func:`partitions`)."""
    return [t for t in snapshot.tables if in_audited_schema(t.schema, config) and not is_partition(t)]


def partitions(snapshot: Snapshot, config: Config) -> list[Table]:
    """The partitions (every level, default partitions included) in the audited schemas, in snapshot order.
    A query that names a partition gets the partition's own row level security, not its parent's."""
    return [t for t in snapshot.tables if in_audited_schema(t.schema, config) and is_partition(t)]


def in_audited_schema(schema: str, config: Config) -> bool:
    """The config's schemas when it names them, else every schema but the excluded (platform-managed) ones."""
    if config.schemas:
        return schema in config.schemas
    return schema not in config.exclude_schemas


def is_tenants_table(table: Table, config: Config) -> bool:
    return table.schema == config.tenant.tenants_schema and table.name == config.tenant.tenants_name


def tenant_column(table: Table, config: Config) -> Optional[str]:
    """The column that says which tenant a row belongs to: the configured tenant column, or the key of
    the tenants table itself. None when the table has neither."""
    if is_tenants_table(table, config):
        return config.tenant.tenants_key if table.column(config.tenant.tenants_key) else None
    return config.tenant.column if table.column(config.tenant.column) else None


def has_tenant_column(table: Table, config: Config) -> bool:
    return not is_tenants_table(table, config) and table.column(config.tenant.column) is not None


def party_columns(snapshot: Snapshot, table: Table, config: Config) -> tuple[str, ...]:
    """The columns naming each tenant of a two-party table (``buyer_org_id``, ``seller_org_id``), () for any
    other table. A row of such a table belongs to every tenant it names; it is not single-tenant data.

    Two-party: the config's ``tenant.table_tenant_columns`` lists two or more columns for the table (a partition
    is looked up by its root), or the table has no tenant column of its own and two or more single-column
    foreign keys to the tenants table. A table with the tenant column and another reference to the tenants
    table (``tenant_id`` + ``invited_by_tenant_id``) stays single-tenant unless the config lists it."""
    root = partition_root(snapshot, table) if is_partition(table) else table
    if is_tenants_table(root, config):
        return ()
    listed = config.tenant.table_tenant_columns.get(root.qualified)
    if listed is not None:
        cols = tuple(dict.fromkeys(c for c in listed if table.column(c) is not None))
        return cols if len(cols) > 1 else ()
    if root.column(config.tenant.column) is not None:
        return ()
    tm = config.tenant
    cols = tuple(
        dict.fromkeys(
            fk.columns[0]
            for fk in root.foreign_keys
            if len(fk.columns) == 1 and (fk.ref_schema, fk.ref_table) == (tm.tenants_schema, tm.tenants_name)
        )
    )
    return cols if len(cols) > 1 and all(table.column(c) is not None for c in cols) else ()


@dataclass(frozen=True)
class FkStep:
    """One hop child -> parent along a foreign key."""

    child: Table
    constraint: Constraint
    parent: Table


def _parents(snapshot: Snapshot, table: Table) -> Iterable[FkStep]:
    for fk in table.foreign_keys:
        parent = snapshot.table(f"{fk.ref_schema}.{fk.ref_table}")
        if parent is not None and parent.qualified != table.qualified:
            yield FkStep(table, fk, parent)


def tenant_path(snapshot: Snapshot, table: Table, config: Config) -> Optional[list[FkStep]]:
    """Shortest foreign-key path from ``table`` to a table that carries the tenant column (or to the tenants
    table). [] when ``table`` has the tenant column itself; None when no path exists.
    Ties are broken deterministically by constraint name."""
    if has_tenant_column(table, config) or is_tenants_table(table, config):
        return []
    seen = {table.qualified}
    queue: deque[tuple[Table, list[FkStep]]] = deque([(table, [])])
    while queue:
        current, path = queue.popleft()
        for step in sorted(_parents(snapshot, current), key=lambda s: s.constraint.name):
            if step.parent.qualified in seen:
                continue
            new_path = path + [step]
            if has_tenant_column(step.parent, config) or is_tenants_table(step.parent, config):
                return new_path
            seen.add(step.parent.qualified)
            queue.append((step.parent, new_path))
    return None


def is_tenant_table(snapshot: Snapshot, table: Table, config: Config) -> bool:
    """Tenant data: the table has the tenant column, reaches a tenant table through foreign keys, or is
    two-party data (:func:`party_columns`). The tenants table itself is not tenant data in this sense (it is
    the root)."""
    if is_tenants_table(table, config):
        return False
    return tenant_path(snapshot, table, config) is not None or bool(party_columns(snapshot, table, config))


def tenant_tables(snapshot: Snapshot, config: Config) -> list[Table]:
    return [t for t in audited_tables(snapshot, config) if is_tenant_table(snapshot, t, config)]


def in_tenant_scope(snapshot: Snapshot, table: Table, config: Config) -> bool:
    """Tables whose rows belong to tenants: tenant tables and the tenants table itself."""
    return is_tenants_table(table, config) or is_tenant_table(snapshot, table, config)
