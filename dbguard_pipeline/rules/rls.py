"""Row level security rules: is RLS on where tenant data lives, and do the policies isolate tenants?

Policies are read on the parse tree (:mod:`dbguard_pipeline.policy`), not as text.
"""
from __future__ import annotations

from dbguard_pipeline.semantics.tenancy import audited_tables, is_tenants_table, tenant_column
from dbguard_pipeline.rules import rule
from dbguard_pipeline.rules._common import (analyzer, check_analysis, covered_by_restrictive, fix_rls_command, good_enough, in_tenant_scope, policy_is_moot, qname, roles_text, tenant_scope_tables, using_analysis)


def _grantees(table) -> str:
    api = sorted({g.grantee for g in table.grants if g.grantee in ("anon", "authenticated", "public")})
    return roles_text(api)


@rule("rls_disabled_with_tenant_column", "critical", "rls", "Tenant table without row level security",
      "The table has the tenant column (for the tenants table: its key) but row level security is disabled, "
      "so nothing stops one tenant from reading or changing another tenant's rows.",
      fix_action="fix-rls-policy", tags=("weakens-table",))
def rls_disabled_with_tenant_column(snapshot, metrics, config, *, spec):
    for t in audited_tables(snapshot, config):
        col = tenant_column(t, config)  # the tenants table counts too: its key is its tenant column
        if t.rls_enabled or col is None:
            continue
        exposed = _grantees(t)
        who = f" ({exposed} can query it)" if exposed else ""
        yield spec.finding(
            t, f"{t.qualified} has the tenant column {col} but row level security is disabled{who}: "
               f"every session sees and changes every tenant's rows",
            fix_rls_command(t), detail={"grantees": exposed})


@rule("policy_exists_rls_disabled", "critical", "rls", "Policies exist but row level security is off",
      "Policies were written for the table but row level security is disabled, so none of them applies.",
      fix_action="fix-rls-policy")
def policy_exists_rls_disabled(snapshot, metrics, config, *, spec):
    for t in audited_tables(snapshot, config):
        if t.rls_enabled or not t.policies:
            continue
        names = ", ".join(p.name for p in t.policies)
        remediation = (fix_rls_command(t) if in_tenant_scope(snapshot, t, config)
                       else f"ALTER TABLE {qname(t.schema, t.name)} ENABLE ROW LEVEL SECURITY;")
        yield spec.finding(
            t, f"{t.qualified} has {len(t.policies)} polic{'y' if len(t.policies) == 1 else 'ies'} ({names}) "
               f"but row level security is disabled: none of them is enforced",
            remediation, detail={"policies": [p.name for p in t.policies]})


def _weak(an, t, p, tcol):
    """The USING analysis when the permissive policy p lets rows of other tenants through, else None."""
    if not p.permissive or p.command == "insert":
        return None
    u = using_analysis(an, t, p, tcol)
    if u is None or good_enough(u, tcol, strict=False):
        return None
    return u


@rule("weak_rls_policy", "warning", "rls", "Permissive policy that does not restrict rows to the tenant",
      "A permissive policy whose USING expression is always true in any spelling (true, 1=1, (select true), "
      "tenant_id = tenant_id, true or ...) or never compares the tenant column with the tenant context. "
      "Permissive policies are OR-ed, so one weak policy opens the table.",
      fix_action="fix-rls-policy", tags=("replaces-policy", "weakens-policy", "weakens-table",))
def weak_rls_policy(snapshot, metrics, config, *, spec):
    an = analyzer(snapshot, config)
    for t in tenant_scope_tables(snapshot, config):
        tcol = tenant_column(t, config)
        for p in t.policies:
            if policy_is_moot(p, snapshot):
                continue
            u = _weak(an, t, p, tcol)
            if u is None or covered_by_restrictive(an, t, p, tcol, "using"):
                continue
            cmds = "ALL" if p.command == "all" else p.command.upper()
            writes = ""
            if p.command in ("all", "update") and not p.with_check:
                writes = "; with no WITH CHECK the same expression lets rows be written for any tenant"
            reason = u.describe()
            yield spec.finding(
                t, f'policy "{p.name}" ({cmds} to {roles_text(p.roles)}) on {t.qualified} {reason}: '
                   f"it lets every such session see every tenant's rows{writes}",
                fix_rls_command(t), object=p.name,
                detail={"command": p.command, "roles": list(p.roles), "using": p.using, "parsed": u.parsed,
                        "always_true": u.always_true, "parse_error": u.error})


@rule("missing_with_check", "warning", "rls", "Write policy that lets rows be written for another tenant",
      "An INSERT, UPDATE or ALL policy whose WITH CHECK does not pin the tenant column, or that has no WITH "
      "CHECK while its USING does not pin it either (PostgreSQL checks new rows against USING when WITH "
      "CHECK is absent, so USING alone can be correct).",
      fix_action="fix-rls-policy", tags=("replaces-policy", "weakens-policy", "weakens-table",))
def missing_with_check(snapshot, metrics, config, *, spec):
    an = analyzer(snapshot, config)
    for t in tenant_scope_tables(snapshot, config):
        tcol = tenant_column(t, config)
        tenants = is_tenants_table(t, config)
        for p in t.policies:
            if not p.permissive or p.command not in ("insert", "update", "all") or policy_is_moot(p, snapshot):
                continue
            if tenants and p.command == "insert":
                continue  # creating a tenant is not writing a row for another tenant
            if not p.with_check and p.command == "insert":
                continue  # an INSERT policy without WITH CHECK admits no row at all
            check = check_analysis(an, t, p, tcol)
            if good_enough(check, tcol, strict=True):
                continue
            if not p.with_check and _weak(an, t, p, tcol) is not None:
                continue  # the same always-true / unpinned USING is reported once, as weak_rls_policy
            if covered_by_restrictive(an, t, p, tcol, "check"):
                continue
            cmds = "ALL" if p.command == "all" else p.command.upper()
            target = tcol or "the row's parent"
            if p.with_check:
                how = f"its WITH CHECK {check.describe()}"
            else:
                how = f"it has no WITH CHECK and its USING (checked instead) {check.describe()}"
            yield spec.finding(
                t, f'policy "{p.name}" ({cmds} to {roles_text(p.roles)}) on {t.qualified}: {how}, so a session '
                   f"can write rows whose {target} names another tenant",
                fix_rls_command(t), object=p.name,
                detail={"command": p.command, "roles": list(p.roles), "with_check": p.with_check,
                        "using": p.using, "parsed": check.parsed if check else True})


@rule("rls_enabled_no_policy", "info", "rls", "Row level security on and no policy",
      "Row level security is enabled but no policy exists: every query by a role subject to RLS sees no "
      "rows and every write fails. Safe, but usually not what was meant.")
def rls_enabled_no_policy(snapshot, metrics, config, *, spec):
    for t in audited_tables(snapshot, config):
        if t.rls_enabled and not t.policies:
            remediation = (fix_rls_command(t) if in_tenant_scope(snapshot, t, config)
                           else f"CREATE POLICY ... ON {qname(t.schema, t.name)} ... (or leave it closed on purpose)")
            yield spec.finding(
                t, f"{t.qualified} has row level security enabled and no policy: every access by a role "
                   f"subject to RLS is denied", remediation)


@rule("rls_not_forced", "warning", "rls", "RLS not forced on a table the application role owns",
      "Table owners bypass row level security unless it is FORCEd. When the application connects as the "
      "role that owns its tables, its policies never apply.",
      fix_action="fix-rls-policy", tags=("weakens-table",))
def rls_not_forced(snapshot, metrics, config, *, spec):
    app = config.tenant.app_role
    for t in tenant_scope_tables(snapshot, config):
        if not t.rls_enabled or t.rls_forced:
            continue
        if not (config.tenant.app_role_owns_tables or t.owner == app):
            continue
        yield spec.finding(
            t, f"{t.qualified} is owned by {t.owner}, the role the application connects as, and row level "
               f"security is not forced: the owner bypasses every policy",
            f"{fix_rls_command(t)}  (or: ALTER TABLE {qname(t.schema, t.name)} FORCE ROW LEVEL SECURITY;)",
            detail={"owner": t.owner, "app_role": app})


@rule("tenant_context_cast_unsafe", "warning", "rls", "current_setting() cast without nullif",
      "A policy casts current_setting(...) to a non-text type without nullif. Once the setting has been set "
      "in a session and reset (connection pools, SET LOCAL), it reads as '' and ''::uuid raises an error, "
      "so queries fail instead of returning no rows.",
      fix_action="fix-rls-policy", tags=("replaces-policy",))
def tenant_context_cast_unsafe(snapshot, metrics, config, *, spec):
    an = analyzer(snapshot, config)
    for t in audited_tables(snapshot, config):
        tcol = tenant_column(t, config)
        for p in t.policies:
            casts: list[str] = []
            for a in (using_analysis(an, t, p, tcol),
                      an.analyze(p.with_check, table=t, tenant_column=tcol) if p.with_check else None):
                if a is not None:
                    casts.extend(c for c in a.unsafe_casts if c not in casts)
            if not casts:
                continue
            guc = config.tenant.guc
            remediation = (fix_rls_command(t) if in_tenant_scope(snapshot, t, config) else
                           f"wrap the setting in nullif: (select nullif(current_setting('{guc}', true), '')::uuid)")
            yield spec.finding(
                t, f'policy "{p.name}" on {t.qualified} casts {", ".join(casts)} without nullif: the query '
                   f"raises an error once the setting is reset to ''",
                remediation, object=p.name, detail={"casts": casts})
