"""fix-rls-policy TABLE: enable (and FORCE) row level security and rewrite the policies the audit flagged, each
with its own command, roles and name, pinning the tenant with the database's own idiom (:mod:`.idiom`); a
policy whose only finding is auth_rls_initplan only gets its calls wrapped in ``(select ...)``. A FOR ALL
tenant policy is created only on a table where no policy applies to the application role. The RLS part is shared with add-tenant-isolation.

Which policies are replaced is the audit's judgment, not a second analysis: the policies named by a finding of
a rule tagged ``replaces-policy`` (weak_rls_policy, missing_with_check, tenant_context_cast_unsafe,
auth_rls_initplan). A replaced policy is called weak when a rule tagged ``weakens-policy`` flagged it (it lets
rows of other tenants through), unsafe otherwise (it breaks queries or is slow).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
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
from dbguard_pipeline.fixes.sql import pg_name, tenant_context
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.model.schema import Policy, Table
from dbguard_pipeline.rules import fix_actions, rules_tagged
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.semantics.roles import RoleGraph, owner_escape
from dbguard_pipeline.text import ident, qname, quoted, quoted_qname, role_list

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
    final: list[Policy] = dataclasses.field(default_factory=list)  # the table's policies after the forward file


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
    app = {ctx.config.tenant.app_role, "public"}
    out = []
    for p in policies:
        if not p.permissive or not app & set(p.roles):
            continue  # a restrictive policy only narrows; another role's policy is not the app's business
        using, check = an.analyze_policy(table, p, column)
        parts = [a for a in (using, check) if a is not None]
        if not parts or not all(a.pins_tenant for a in parts):
            out.append(p)
    return out


def _own_pin(ctx: Context, table: Table, column: str, p: Policy) -> Optional[str]:
    """The policy's own USING (or WITH CHECK) when the analyzer accepts it as pinning the tenant safely."""
    from dbguard_pipeline.policy.analyzer import analyzer_for

    an = analyzer_for(ctx.snapshot, ctx.config)
    for text in (p.using, p.with_check):
        a = an.analyze(text, table=table, tenant_column=column) if text else None
        if a is not None and a.pins_tenant and not a.always_false and not a.unsafe_casts and not a.user_metadata:
            return wrap_calls(text)
    return None


def _with_exprs(p: Policy, using: Optional[str], check: Optional[str]) -> Policy:
    """``p`` with new expressions where its command has them (SELECT/DELETE: USING; INSERT: WITH CHECK)."""
    return dataclasses.replace(
        p,
        using=using if p.command in ("all", "select", "update", "delete") else None,
        with_check=check if p.command in ("all", "insert", "update") else None,
    )


def tenant_predicate(ctx: Context, table: Table, column: str, col_type: str, skip: frozenset[str]) -> tuple[str, str]:
    """(predicate pinning ``column`` to the current tenant, where the idiom comes from): the database's own
    idiom (:func:`.idiom.find_idiom`), else the config's tenant context."""
    found = find_idiom(ctx.snapshot, ctx.config, table, column, skip)
    if found is not None:
        return found
    cfg = ctx.config
    if not {"context", "guc", "jwt_claim"} & cfg.tenant.model_fields_set:
        raise DbguardError(
            f"cannot tell how the application sends its tenant: no policy for "
            f"{cfg.tenant.app_role} pins {column} in {table.schema}, and the config does not say "
            f"(set tenant.context and tenant.guc or tenant.jwt_claim, or write one tenant policy "
            f"by hand and generate again)"
        )
    source = (
        "the config's JWT claim " + cfg.tenant.jwt_claim
        if cfg.tenant.context == "jwt"
        else "the config's setting " + cfg.tenant.guc
    )
    return f"{quoted(column)} = {tenant_context(cfg, col_type)}", source


def rls_plan(ctx: Context, table: Table, column: str, col_type: str, *, adding_column: bool) -> RlsPlan | None:
    """Enable (and FORCE) RLS; replace each flagged policy by one with the same name, command, roles and
    permissive flag that pins the tenant with the database's own idiom; wrap the calls of policies whose only
    finding is auth_rls_initplan; create a FOR ALL tenant policy only when the table has no policy at all."""
    cfg = ctx.config
    role = check_role(ctx)
    findings = ctx.table_findings(table, RLS_RULES)
    # as the table will be: RLS enabled (the owner's escape is what FORCE then closes)
    escape = owner_escape(ctx.snapshot, replace(table, rls_enabled=True), cfg)
    force = escape is not None or (table.owner == cfg.tenant.app_role and not table.rls_forced)
    replaced = replaced_policies(table, findings)
    wrapped = wrapped_policies(table, findings)
    if adding_column:  # policies that do not pin the new column are rewritten in the same migration
        names = {p.name for p in replaced}
        replaced += [p for p in _unpinned(ctx, table, column, [p for p in table.policies if p.name not in names])]
        wrapped = [p for p in wrapped if p.name not in {r.name for r in replaced}]
    weak = {f.object for f in findings if f.rule in WEAK_POLICY_RULES}
    kept = [p for p in table.policies if p not in replaced]
    policy_name = pg_name(table.name, "tenant_isolation")
    # a tenant policy only where no policy applies to the application role (one beside others would be OR-ed
    # with them, and it would grant commands no policy granted); a policy TO a group role the application role
    # inherits applies to it too
    graph = RoleGraph(ctx.snapshot)
    app_policies = [p for p in table.policies if graph.policy_applies(p, role)]
    create = not app_policies and not any(p.name == policy_name for p in kept)
    if not create and not replaced and not wrapped and table.rls_enabled and (table.rls_forced or not force):
        return None
    q = quoted_qname(table.schema, table.name)
    fwd: list[str] = []
    back: list[str] = []
    what: list[str] = []
    undo: list[str] = []
    if not table.rls_enabled:
        fwd.append(f"ALTER TABLE {q} ENABLE ROW LEVEL SECURITY")
        what.append(f"enable row level security on {qname(table.schema, table.name)}")
        undo.append("disable row level security again")
    if force and not table.rls_forced:
        fwd.append(f"ALTER TABLE {q} FORCE ROW LEVEL SECURITY")
        what.append(f"force row level security ({escape.reason if escape else 'the application role owns the table'})")
        undo.append("remove FORCE ROW LEVEL SECURITY")
    final = [p for p in table.policies if p not in replaced and p not in wrapped]
    pred, source = ("", "")
    if replaced or create:
        pred, source = tenant_predicate(ctx, table, column, col_type, frozenset(p.name for p in replaced))
    for p in replaced:
        own = _own_pin(ctx, table, column, p)  # a policy that pins the tenant in one half keeps its own idiom
        new = _with_exprs(p, own or pred, own or pred)
        final.append(new)
        fwd.append(drop_policy(table.schema, table.name, p.name))
        fwd.append(create_policy(table.schema, table.name, new))
        what.append(
            f"rewrite the {'weak' if p.name in weak else 'incomplete'} policy {quoted(p.name)} "
            f"({p.command.upper()}, TO {role_list(p.roles)}; same command, roles and name): {ident(column)} = the "
            f"current tenant, as {source}"
        )
    for p in wrapped:
        new = dataclasses.replace(p, using=wrap_calls(p.using), with_check=wrap_calls(p.with_check))
        final.append(new)
        fwd.append(drop_policy(table.schema, table.name, p.name))
        fwd.append(create_policy(table.schema, table.name, new))
        what.append(
            f"wrap the auth/current_setting calls of policy {quoted(p.name)} in (select ...): evaluated "
            "once per query; the predicate is unchanged"
        )
    if create:
        # the tenants table: SELECT only (sign-up and directories insert tenants outside the tenant's context)
        tenants_root = tenancy.is_tenants_table(table, cfg)
        created = Policy(
            policy_name, True, "select" if tenants_root else "all", (role,), pred, None if tenants_root else pred
        )
        final.append(created)
        fwd.append(create_policy(table.schema, table.name, created))
        what.append(
            f"create policy {quoted(policy_name)}: FOR {created.command.upper()} TO {ident(role)} (no policy "
            f"applies to {ident(role)}), {ident(column)} = the current tenant, as {source}"
        )
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
    return RlsPlan(fwd, back, what, undo, findings, final)


def reachable(ctx: Context, table: Table) -> bool:
    """The application role can query ``table`` directly (a grant to it, to PUBLIC or to a role whose privileges
    it has, or it acts as the owner)."""
    graph = RoleGraph(ctx.snapshot)
    role = ctx.config.tenant.app_role
    who = graph.privileges_of(role) | {"public"}
    return graph.acts_as_owner(role, table) or any(
        g.grantee in who and g.privilege in ("SELECT", "INSERT", "UPDATE", "DELETE") for g in table.grants
    )


def partitions_plan(ctx: Context, table: Table, final: list[Policy]) -> RlsPlan:
    """Row level security on the parent does not apply to a query that names a partition: every partition
    the application role can reach gets RLS enabled (and FORCEd like the parent) and a copy of each of the
    parent's policies it lacks (same name, command, roles and expressions), so a partition is exactly as
    open as the parent."""
    cfg = ctx.config
    force = cfg.tenant.app_role_owns_tables
    out = RlsPlan([], [], [], [], [])
    for part in sorted((t for t in ctx.snapshot.tables if t.parent == table.qualified), key=lambda t: t.qualified):
        if not reachable(ctx, part):
            continue
        q = quoted_qname(part.schema, part.name)
        have = {p.name for p in part.policies}
        missing = [p for p in final if p.name not in have]
        enable = not part.rls_enabled
        do_force = (force or part.owner == cfg.tenant.app_role) and not part.rls_forced
        if not (missing or enable or do_force):
            continue
        if enable:
            out.forward.append(f"ALTER TABLE {q} ENABLE ROW LEVEL SECURITY")
        if do_force:
            out.forward.append(f"ALTER TABLE {q} FORCE ROW LEVEL SECURITY")
        for p in missing:
            out.forward.append(create_policy(part.schema, part.name, p))
            out.rollback.append(drop_policy(part.schema, part.name, p.name))
        if do_force:
            out.rollback.append(f"ALTER TABLE {q} NO FORCE ROW LEVEL SECURITY")
        if enable:
            out.rollback.append(f"ALTER TABLE {q} DISABLE ROW LEVEL SECURITY")
        out.what.append(
            f"partition {qname(part.schema, part.name)} (the application role can query it directly): "
            + ", ".join(
                (["enable row level security"] if enable else [])
                + (["force it"] if do_force else [])
                + [f"copy policy {quoted(p.name)}" for p in missing]
            )
        )
        out.undo.append(f"partition {qname(part.schema, part.name)}: drop the copied policies, RLS flags as they were")
    return out


def plan_fix_rls_policy(ctx: Context, table_name: str) -> Migration:
    table = resolve_table(ctx.snapshot, table_name)
    cfg = ctx.config
    column = tenancy.tenant_column(table, cfg)
    if column is None:
        parties = tenancy.party_columns(ctx.snapshot, table, cfg)
        if parties:
            raise DbguardError(
                f"{qname(table.schema, table.name)} is two-party data ({', '.join(parties)} each name a tenant): dbguard does not "
                f"write its policies; pin the tenant on each side: USING ({' OR '.join(f'{c} = <ctx>' for c in parties)})"
            )
        path = tenancy.tenant_path(ctx.snapshot, table, cfg)
        if path:
            via = " -> ".join([table.qualified] + [s.parent.qualified for s in path])
            raise DbguardError(
                f"{qname(table.schema, table.name)} has no {cfg.tenant.column} column (its tenant is reached via {via}): "
                f"run add-tenant-isolation {qname(table.schema, table.name)} first, which also writes its policies"
            )
        raise DbguardError(
            f"{qname(table.schema, table.name)} is not tenant data: it has no {cfg.tenant.column} column and no "
            "foreign-key path to a table that has one"
        )
    col = table.column(column)
    assert col is not None  # tenant_column() names a column of the table
    rls = rls_plan(ctx, table, column, col.type, adding_column=False)
    if table.kind == "partitioned":
        parts = partitions_plan(ctx, table, rls.final if rls is not None else list(table.policies))
        if parts.forward:
            rls = rls or RlsPlan([], [], [], [], ctx.table_findings(table, RLS_RULES), list(table.policies))
            rls.forward += parts.forward
            rls.rollback[:0] = parts.rollback
            rls.what += parts.what
            rls.undo += parts.undo
    if rls is None:
        raise NothingToFix(
            f"{qname(table.schema, table.name)}: RLS is enabled{' and forced' if table.rls_forced else ''} and no "
            "policy is weak: nothing to fix"
        )
    m = new_migration(ctx, ACTION, table)
    m.what, m.undo = rls.what, list(reversed(rls.undo))
    m.why = why(rls.findings)
    m.fixes = [f.cache_key for f in rls.findings]
    m.forward = [Block(tuple(rls.forward), comment="row level security and tenant policies (one transaction)")]
    m.rollback = [Block(tuple(rls.rollback), comment="restore the policies and RLS flags as they were")]
    return m
