"""fix-rls-policy TABLE: enable (and FORCE) row level security and rewrite the policies the audit flagged, each
with its own command, roles and name, pinning the tenant with the database's own idiom (:mod:`.idiom`); a
policy whose only finding is auth_rls_initplan only gets its calls wrapped in ``(select ...)``. A FOR ALL
tenant policy is created only on a table without any policy. The RLS part is shared with add-tenant-isolation.

Which policies are replaced is the audit's judgment, not a second analysis: the policies named by a finding of
a rule tagged ``replaces-policy`` (weak_rls_policy, missing_with_check, tenant_context_cast_unsafe,
auth_rls_initplan). A replaced policy is called weak when a rule tagged ``weakens-policy`` flagged it (it lets
rows of other tenants through), unsafe otherwise (it breaks queries or is slow).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

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
from dbguard_pipeline.fixes.actions.idiom import find_idiom, wrap_calls
from dbguard_pipeline.fixes.plan import Block, Migration
from dbguard_pipeline.fixes.sql import pg_name, role_name, tenant_context
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.model.schema import Policy, Table
from dbguard_pipeline.rules import fix_actions, rules_tagged
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.text import quoted, quoted_qname

ACTION = "fix-rls-policy"
# the rules whose findings this action fixes, and those whose finding names a policy it replaces
RLS_RULES = tuple(k for k, v in fix_actions().items() if v == ACTION)
REPLACED_POLICY_RULES = frozenset(rules_tagged("replaces-policy"))
WEAK_POLICY_RULES = frozenset(rules_tagged("weakens-policy"))
INITPLAN = "auth_rls_initplan"


@dataclass
class RlsPlan:
    forward: list[str]
    rollback: list[str]
    what: list[str]
    undo: list[str]
    findings: list[Finding]


def replaced_policies(table: Table, findings: list[Finding]) -> list[Policy]:
    """The policies of ``table`` that a finding of a ``replaces-policy`` rule other than auth_rls_initplan
    names, by name (an auth_rls_initplan finding alone only wraps the calls: :func:`wrapped_policies`)."""
    flagged = {f.object for f in findings if f.rule in REPLACED_POLICY_RULES and f.rule != INITPLAN and f.object}
    return sorted((p for p in table.policies if p.name in flagged), key=lambda p: p.name)


def wrapped_policies(table: Table, findings: list[Finding]) -> list[Policy]:
    """The policies whose only problem is auth_rls_initplan: their calls get wrapped, nothing else."""
    replaced = {p.name for p in replaced_policies(table, findings)}
    flagged = {f.object for f in findings if f.rule == INITPLAN and f.object} - replaced
    return sorted((p for p in table.policies if p.name in flagged), key=lambda p: p.name)


def _unpinned(ctx: Context, table: Table, column: str, policies: list[Policy]) -> list[Policy]:
    """Permissive policies that do not pin ``column`` to the tenant (after a new column, the parent-guard
    policies: OR-ed with the tenant policy they would let a row move to another tenant)."""
    from dbguard_pipeline.policy.analyzer import analyzer_for

    an = analyzer_for(ctx.snapshot, ctx.config)
    out = []
    for p in policies:
        if not p.permissive:
            continue
        using, check = an.analyze_policy(table, p, column)
        parts = [a for a in (using, check) if a is not None]
        if not parts or not all(a.pins_tenant for a in parts):
            out.append(p)
    return out


def _with_exprs(p: Policy, using: Optional[str], check: Optional[str]) -> Policy:
    """``p`` with new expressions where its command has them (SELECT/DELETE: USING; INSERT: WITH CHECK)."""
    return dataclasses.replace(
        p, using=using if p.command in ("all", "select", "update", "delete") else None,
        with_check=check if p.command in ("all", "insert", "update") else None)


def tenant_predicate(ctx: Context, table: Table, column: str, col_type: str,
                     skip: frozenset[str]) -> tuple[str, str]:
    """(predicate pinning ``column`` to the current tenant, where the idiom comes from): the database's own
    idiom (:func:`.idiom.find_idiom`), else the config's tenant context."""
    found = find_idiom(ctx.snapshot, ctx.config, table, column, skip)
    if found is not None:
        return found
    cfg = ctx.config
    source = ("the config's JWT claim " + cfg.tenant.jwt_claim if cfg.tenant.context == "jwt"
              else "the config's setting " + cfg.tenant.guc)
    return f"{quoted(column)} = {tenant_context(cfg, col_type)}", source


def rls_plan(ctx: Context, table: Table, column: str, col_type: str, *, adding_column: bool) -> RlsPlan | None:
    """Enable (and FORCE) RLS; replace each flagged policy by one with the same name, command, roles and
    permissive flag that pins the tenant with the database's own idiom; wrap the calls of policies whose only
    finding is auth_rls_initplan; create a FOR ALL tenant policy only when the table has no policy at all."""
    cfg = ctx.config
    role = check_role(ctx)
    findings = ctx.table_findings(table, RLS_RULES)
    force = cfg.tenant.app_role_owns_tables or table.owner == cfg.tenant.app_role
    replaced = replaced_policies(table, findings)
    wrapped = wrapped_policies(table, findings)
    if adding_column:  # policies that do not pin the new column are rewritten in the same migration
        names = {p.name for p in replaced}
        replaced += [p for p in _unpinned(ctx, table, column, [p for p in table.policies if p.name not in names])]
        wrapped = [p for p in wrapped if p.name not in {r.name for r in replaced}]
    weak = {f.object for f in findings if f.rule in WEAK_POLICY_RULES}
    kept = [p for p in table.policies if p not in replaced]
    policy_name = pg_name(table.name, "tenant_isolation")
    create = not table.policies and not any(p.name == policy_name for p in kept)
    if not create and not replaced and not wrapped and table.rls_enabled and (table.rls_forced or not force):
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
        what.append("force row level security (the application role owns the table)")
        undo.append("remove FORCE ROW LEVEL SECURITY")
    pred, source = ("", "")
    if replaced or create:
        pred, source = tenant_predicate(ctx, table, column, col_type, frozenset(p.name for p in replaced))
    for p in replaced:
        new = _with_exprs(p, pred, pred)
        fwd.append(drop_policy(table.schema, table.name, p.name))
        fwd.append(create_policy(table.schema, table.name, new))
        what.append(f"rewrite the {'weak' if p.name in weak else 'incomplete'} policy {quoted(p.name)} "
                    f"({p.command.upper()}, TO {', '.join(p.roles)}; same command, roles and name): {column} = the "
                    f"current tenant, as {source}")
    for p in wrapped:
        new = dataclasses.replace(p, using=wrap_calls(p.using), with_check=wrap_calls(p.with_check))
        fwd.append(drop_policy(table.schema, table.name, p.name))
        fwd.append(create_policy(table.schema, table.name, new))
        what.append(f"wrap the auth/current_setting calls of policy {quoted(p.name)} in (select ...): evaluated "
                    "once per query; the predicate is unchanged")
    if create:
        fwd.append("\n".join([
            f"CREATE POLICY {quoted(policy_name)} ON {q}",
            f"    AS PERMISSIVE FOR ALL TO {role_name(role)}",
            f"    USING ({pred})",
            f"    WITH CHECK ({pred})",
        ]))
        what.append(f"create policy {quoted(policy_name)}: FOR ALL TO {role} (the table has no policy), USING and "
                    f"WITH CHECK {column} = the current tenant, as {source}")
        back.append(drop_policy(table.schema, table.name, policy_name))
        undo.append(f"drop policy {quoted(policy_name)}")
    for p in [*replaced, *wrapped]:
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
