"""fix-rls-policy TABLE: enable (and FORCE) row level security and replace the policies the audit flagged by one
tenant policy for every command. The RLS part is shared with add-tenant-isolation.

Which policies are replaced is the audit's judgment, not a second analysis: the policies named by a finding of
a rule tagged ``replaces-policy`` (weak_rls_policy, missing_with_check, tenant_context_cast_unsafe,
auth_rls_initplan). A replaced policy is called weak when a rule tagged ``weakens-policy`` flagged it (it lets
rows of other tenants through), unsafe otherwise (it breaks queries or is slow).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.actions.context import (
    Context,
    NothingToFix,
    check_role,
    create_policy,
    drop_policy,
    new_migration,
    resolve_table,
    why,
)
from dbguard_pipeline.fixes.plan import Block, Migration
from dbguard_pipeline.fixes.sql import pg_name, role_name, tenant_context
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.model.schema import Policy, Table
from dbguard_pipeline.rules import fix_actions, rules_tagged
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.semantics.roles import owner_escape
from dbguard_pipeline.text import quoted, quoted_qname

ACTION = "fix-rls-policy"
# the rules whose findings this action fixes, and those whose finding names a policy it replaces
RLS_RULES = tuple(k for k, v in fix_actions().items() if v == ACTION)
REPLACED_POLICY_RULES = frozenset(rules_tagged("replaces-policy"))
WEAK_POLICY_RULES = frozenset(rules_tagged("weakens-policy"))


@dataclass
class RlsPlan:
    forward: list[str]
    rollback: list[str]
    what: list[str]
    undo: list[str]
    findings: list[Finding]


def replaced_policies(table: Table, findings: list[Finding]) -> list[Policy]:
    """The policies of ``table`` that a finding of a ``replaces-policy`` rule names, by name."""
    flagged = {f.object for f in findings if f.rule in REPLACED_POLICY_RULES and f.object}
    return sorted((p for p in table.policies if p.name in flagged), key=lambda p: p.name)


def rls_plan(ctx: Context, table: Table, column: str, col_type: str, *, adding_column: bool) -> RlsPlan | None:
    """Enable (and FORCE) RLS, replace flagged policies by one tenant policy for every command."""
    cfg = ctx.config
    role = check_role(ctx)
    findings = ctx.table_findings(table, RLS_RULES)
    # as the table will be: RLS enabled (the owner's escape is what FORCE then closes)
    escape = owner_escape(ctx.snapshot, replace(table, rls_enabled=True), cfg)
    force = escape is not None or (table.owner == cfg.tenant.app_role and not table.rls_forced)
    replaced = replaced_policies(table, findings)
    weak = {f.object for f in findings if f.rule in WEAK_POLICY_RULES}
    kept = [p for p in table.policies if p not in replaced]
    policy_name = pg_name(table.name, "tenant_isolation")
    name_kept = any(p.name == policy_name for p in kept)
    create = not name_kept and (bool(replaced) or not kept or adding_column)
    if not create and not replaced and table.rls_enabled and (table.rls_forced or not force):
        return None
    q = quoted_qname(table.schema, table.name)
    fwd: list[str] = []
    back: list[str] = []
    what: list[str] = []
    undo: list[str] = []
    if not table.rls_enabled:
        fwd.append(f"ALTER TABLE {q} ENABLE ROW LEVEL SECURITY")
        what.append(f"enable row level security on {table.qualified}")
        undo.append("disable row level security again")
    if force and not table.rls_forced:
        fwd.append(f"ALTER TABLE {q} FORCE ROW LEVEL SECURITY")
        what.append(f"force row level security ({escape.reason if escape else 'the application role owns the table'})")
        undo.append("remove FORCE ROW LEVEL SECURITY")
    for p in replaced:
        fwd.append(drop_policy(table.schema, table.name, p.name))
        what.append(f"drop the {'weak' if p.name in weak else 'unsafe'} policy {quoted(p.name)} "
                    f"({p.command}, TO {', '.join(p.roles)})")
    if create:
        ctx_expr = tenant_context(cfg, col_type)
        fwd.append("\n".join([
            f"CREATE POLICY {quoted(policy_name)} ON {q}",
            f"    AS PERMISSIVE FOR ALL TO {role_name(role)}",
            f"    USING ({quoted(column)} = {ctx_expr})",
            f"    WITH CHECK ({quoted(column)} = {ctx_expr})",
        ]))
        source = "JWT claim" if cfg.tenant.context == "jwt" else "setting " + cfg.tenant.guc
        what.append(f"create policy {quoted(policy_name)}: FOR ALL TO {role}, USING and WITH CHECK "
                    f"{column} = the current tenant ({source})")
        back.append(drop_policy(table.schema, table.name, policy_name))
        undo.append(f"drop policy {quoted(policy_name)}")
    for p in replaced:
        back.append(drop_policy(table.schema, table.name, p.name))
        back.append(create_policy(table.schema, table.name, p))
        undo.append(f"recreate policy {quoted(p.name)} exactly as it was")
    if force and not table.rls_forced:
        back.append(f"ALTER TABLE {q} NO FORCE ROW LEVEL SECURITY")
    if not table.rls_enabled:
        back.append(f"ALTER TABLE {q} DISABLE ROW LEVEL SECURITY")
    return RlsPlan(fwd, back, what, undo, findings)


def plan_fix_rls_policy(ctx: Context, table_name: str) -> Migration:
    table = resolve_table(ctx.snapshot, table_name)
    cfg = ctx.config
    column = tenancy.tenant_column(table, cfg)
    if column is None:
        path = tenancy.tenant_path(ctx.snapshot, table, cfg)
        if path:
            via = " -> ".join([table.qualified] + [s.parent.qualified for s in path])
            raise DbguardError(f"{table.qualified} has no {cfg.tenant.column} column (its tenant is reached via {via}): "
                               f"run add-tenant-isolation {table.qualified} first, which also writes its policies")
        raise DbguardError(f"{table.qualified} is not tenant data: it has no {cfg.tenant.column} column and no "
                           "foreign-key path to a table that has one")
    col = table.column(column)
    assert col is not None  # tenant_column() names a column of the table
    rls = rls_plan(ctx, table, column, col.type, adding_column=False)
    if rls is None:
        raise NothingToFix(f"{table.qualified}: RLS is enabled{' and forced' if table.rls_forced else ''} and no "
                           "policy is weak: nothing to fix")
    m = new_migration(ctx, ACTION, table)
    m.what, m.undo = rls.what, list(reversed(rls.undo))
    m.why = why(rls.findings)
    m.fixes = [f.cache_key for f in rls.findings]
    m.forward = [Block(tuple(rls.forward), comment="row level security and tenant policies (one transaction)")]
    m.rollback = [Block(tuple(rls.rollback), comment="restore the policies and RLS flags as they were")]
    return m
