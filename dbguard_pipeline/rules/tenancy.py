"""Tenancy rules: does every table of tenant data carry the tenant, and is the tenant column sound?"""
from __future__ import annotations

from dbguard_pipeline.semantics.tenancy import audited_tables, has_tenant_column, is_tenant_table, tenant_path
from dbguard_pipeline.rules import rule
from dbguard_pipeline.rules._common import ident, qname, table_arg


@rule("missing_tenant_column", "critical", "tenancy", "Tenant data without a tenant column",
      "The table holds tenant data (it reaches a tenant table through foreign keys) but has no tenant column, "
      "so row level security cannot isolate it without a join, and every query must remember the join.",
      fix_action="add-tenant-isolation", tags=("weakens-table",))
def missing_tenant_column(snapshot, metrics, config, *, spec):
    col = config.tenant.column
    for t in audited_tables(snapshot, config):
        if has_tenant_column(t, config) or not is_tenant_table(snapshot, t, config):
            continue
        path = tenant_path(snapshot, t, config) or []
        hops = " -> ".join(f"{s.child.name}.{','.join(s.constraint.columns)}" for s in path)
        end = path[-1].parent.qualified if path else "?"
        yield spec.finding(
            t, f"{t.qualified} holds tenant data (it reaches {end} through {hops}) but has no {col} column",
            f"dbguard generate-migration add-tenant-isolation {table_arg(t.schema, t.name)}",
            detail={"path": [f"{s.child.qualified}({','.join(s.constraint.columns)}) -> {s.parent.qualified}"
                             for s in path]})


@rule("tenant_column_nullable", "warning", "tenancy", "Tenant column allows NULL",
      "A row with a NULL tenant belongs to no tenant: policies comparing the tenant column never match it "
      "(invisible data) or, with careless policies (IS NULL branches, coalesce), match it for everyone.",
      tags=("weakens-table",))
def tenant_column_nullable(snapshot, metrics, config, *, spec):
    col = config.tenant.column
    for t in audited_tables(snapshot, config):
        if not has_tenant_column(t, config):
            continue
        c = t.column(col)
        if c.not_null:
            continue
        q = qname(t.schema, t.name)
        check = ident(f"{t.name}_{col}_not_null"[:63])
        yield spec.finding(
            t, f"{t.qualified}.{col} allows NULL: such rows belong to no tenant",
            f"ALTER TABLE {q} ADD CONSTRAINT {check} CHECK ({ident(col)} IS NOT NULL) NOT VALID; "
            f"ALTER TABLE {q} VALIDATE CONSTRAINT {check}; ALTER TABLE {q} ALTER COLUMN {ident(col)} SET NOT NULL; "
            f"ALTER TABLE {q} DROP CONSTRAINT {check};",
            object=col)


def _references_tenants(t, config) -> bool:
    col, key = config.tenant.column, config.tenant.tenants_key
    for fk in t.foreign_keys:
        if (fk.ref_schema, fk.ref_table) != (config.tenant.tenants_schema, config.tenant.tenants_name):
            continue
        pairs = dict(zip(fk.columns, fk.ref_columns))
        if pairs.get(col) == key:
            return True
    return False


@rule("tenant_fk_missing", "warning", "tenancy", "Tenant column without a foreign key to the tenants table",
      "Without the foreign key, rows can name tenants that do not exist (typos, deleted tenants), and "
      "deleting a tenant leaves its rows behind.",
      fix_action="add-foreign-key")
def tenant_fk_missing(snapshot, metrics, config, *, spec):
    col = config.tenant.column
    tenants = f"{config.tenant.tenants_schema}.{config.tenant.tenants_name}"
    exists = snapshot.table(tenants) is not None
    for t in audited_tables(snapshot, config):
        if not has_tenant_column(t, config) or _references_tenants(t, config):
            continue
        note = "" if exists else f" (the tenants table {tenants} does not exist: check tenant.tenants_table)"
        yield spec.finding(
            t, f"{t.qualified}.{col} has no foreign key to {tenants}({config.tenant.tenants_key}){note}",
            f"dbguard generate-migration add-foreign-key {table_arg(t.schema, t.name)} "
            f"{table_arg(config.tenant.tenants_schema, config.tenant.tenants_name)}",
            object=col)
