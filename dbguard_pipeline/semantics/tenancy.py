"""The tenant model applied to a snapshot: which tables hold tenant data, their tenant column, and the
foreign-key paths that tie a table without a tenant column to one that has it.

Used by the rules, the isolation probe and the migration generator, so that all three agree on what a
tenant table is.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.schema import Constraint, Snapshot, Table


# The last answer of each function below, for the snapshot and config it was computed from: every rule asks
# the same questions of the same snapshot, and the answer is a pure function of the two (compared by identity).
_last: dict[str, tuple[Snapshot, Config, list]] = {}


def _memo(name: str, snapshot: Snapshot, config: Config, compute) -> list:
    hit = _last.get(name)
    if hit is not None and hit[0] is snapshot and hit[1] is config:
        return list(hit[2])
    value = compute()
    _last[name] = (snapshot, config, value)
    return list(value)


def audited_tables(snapshot: Snapshot, config: Config) -> list[Table]:
    """Tables the audit looks at: every snapshot table outside the excluded (platform-managed) schemas,
    unless the config names schemas explicitly. Partitions are audited through their parent."""
    return _memo("audited_tables", snapshot, config, lambda: _audited_tables(snapshot, config))


def _audited_tables(snapshot: Snapshot, config: Config) -> list[Table]:
    explicit = set(config.schemas)
    out = []
    for t in snapshot.tables:
        if explicit:
            if t.schema not in explicit:
                continue
        elif t.schema in config.exclude_schemas:
            continue
        if t.kind == "partition":
            continue
        out.append(t)
    return out


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
    """Tenant data: the table has the tenant column, or reaches a tenant table through foreign keys.
    The tenants table itself is not tenant data in this sense (it is the root)."""
    if is_tenants_table(table, config):
        return False
    return tenant_path(snapshot, table, config) is not None


def tenant_tables(snapshot: Snapshot, config: Config) -> list[Table]:
    return _memo("tenant_tables", snapshot, config, lambda: [
        t for t in audited_tables(snapshot, config) if is_tenant_table(snapshot, t, config)])
