"""Security rules: views that bypass row level security, functions with a mutable search_path, policies
that trust data the user controls."""
from __future__ import annotations

from typing import Optional

from dbguard_pipeline.model.schema import Snapshot, Table, View
from dbguard_pipeline.semantics.tenancy import audited_tables, tenant_column
from dbguard_pipeline.rules import rule
from dbguard_pipeline.rules._common import (analyzer, fix_rls_command, ident, in_tenant_scope, qname, roles_text, using_analysis)

API_GRANTEES = ("anon", "authenticated", "public")


def _rls_tables_read(snapshot: Snapshot, view: View) -> list[tuple[Table, str, tuple[str, str]]]:
    """RLS-enabled tables the view reads with somebody else's rights than the caller's, with that role:
    a definer view reads with its owner's rights; a security_invoker view with the caller's, and a
    definer view it reads (directly or through other views) switches to that view's owner.
    Returns (table, role, the definer view whose owner's rights apply)."""
    views = {v.qualified: v for v in snapshot.views}
    out: list[tuple[Table, str, tuple[str, str]]] = []
    seen = set()
    invoker = view.security_invoker and not view.materialized
    todo: list[tuple[View, Optional[str], Optional[tuple[str, str]]]] = [
        (view, None if invoker else view.owner, None if invoker else (view.schema, view.name))]
    while todo:
        v, runner, via = todo.pop()
        for dep in v.depends_on:
            if (dep, runner) in seen:
                continue
            seen.add((dep, runner))
            inner = views.get(dep)
            if inner is not None:
                if not inner.materialized:
                    if inner.security_invoker:
                        todo.append((inner, runner, via))
                    else:
                        todo.append((inner, inner.owner, (inner.schema, inner.name)))
                continue
            t = snapshot.table(dep)
            if t is not None and t.qualified == dep and t.rls_enabled and runner is not None:
                out.append((t, runner, via))
    return out


def _bypasses(snapshot: Snapshot, role: str, table: Table) -> bool:
    r = snapshot.role(role)
    if r is None:
        return True  # unknown owner: assume the worst
    if r.superuser or r.bypassrls:
        return True
    return table.owner == role and not table.rls_forced


@rule("security_definer_view", "critical", "security", "View in an exposed schema bypasses row level security",
      "A view runs with its owner's rights unless it is created WITH (security_invoker = true) (PostgreSQL "
      "15+). When the owner is a superuser, has BYPASSRLS or owns the tables, the view returns every "
      "tenant's rows to whoever may select from it: through the API, to anon and authenticated.",
      tags=("weakens-view",))
def security_definer_view(snapshot, metrics, config, *, spec):
    exposed = set(config.exposed_schemas)
    app = config.tenant.app_role
    for v in snapshot.views:
        if v.schema not in exposed:
            continue
        grantees = sorted({g.grantee for g in v.grants if g.privilege == "SELECT"
                           and (g.grantee in API_GRANTEES or g.grantee == app)})
        if not grantees:
            continue
        reads = [(t, via) for t, runner, via in _rls_tables_read(snapshot, v) if _bypasses(snapshot, runner, t)]
        leaking = sorted({t.qualified for t, _ in reads})
        definers = sorted({via for _, via in reads})
        if not leaking:
            continue
        q = qname(v.schema, v.name)
        who = roles_text(grantees)
        if v.materialized:
            message = (f"materialized view {v.qualified} stores rows of {', '.join(leaking)} read with the rights of "
                       f"{v.owner}, and {who} can select from it: row level security does not apply to it")
            fix = f"REVOKE SELECT ON {q} FROM {', '.join('PUBLIC' if g == 'public' else ident(g) for g in grantees)};  (or move it to a schema the API does not expose)"
        elif v.security_invoker:
            message = (f"view {v.qualified} is security_invoker but reads {', '.join(leaking)} through a view that "
                       f"runs with its owner's rights, and {who} can select from it: it bypasses their policies")
            fix = " ".join(f"ALTER VIEW {qname(*d)} SET (security_invoker = true);" for d in definers)
        else:
            message = (f"view {v.qualified} runs with the rights of its owner {v.owner} over {', '.join(leaking)} "
                       f"(row level security enabled) and {who} can select from it: it bypasses their policies")
            if snapshot.server_version_num >= 150000:
                fix = f"ALTER VIEW {q} SET (security_invoker = true);"
            else:
                fix = (f"REVOKE SELECT ON {q} FROM {', '.join('PUBLIC' if g == 'public' else ident(g) for g in grantees)};"
                       f"  (PostgreSQL < 15 has no security_invoker views: move it out of the exposed schema)")
        yield spec.finding((v.schema, v.name), message, fix,
                           detail={"owner": v.owner, "grantees": grantees, "tables": leaking, "definer_views": [f"{a}.{b}" for a, b in definers],
                                   "materialized": v.materialized})


@rule("function_search_path_mutable", "warning", "security", "Function without a fixed search_path",
      "A function that does not set search_path resolves names through the caller's search_path. A caller "
      "who can create objects in a schema on that path can make it run their code, with the function "
      "owner's rights when it is SECURITY DEFINER.",
      tags=("weakens-function",))
def function_search_path_mutable(snapshot, metrics, config, *, spec):
    explicit = set(config.schemas)
    for f in snapshot.functions:
        if explicit and f.schema not in explicit:
            continue
        if not explicit and f.schema in config.exclude_schemas:
            continue
        if f.language in ("c", "internal") or f.search_path is not None:
            continue
        definer = " (SECURITY DEFINER)" if f.security_definer else ""
        yield spec.finding(
            (f.schema, f.name), f"function {f.schema}.{f.name}({f.arguments}){definer} does not set search_path",
            f"ALTER FUNCTION {qname(f.schema, f.name)}({f.arguments}) SET search_path = '';  "
            f"(then schema-qualify the names its body uses)",
            object=f"{f.name}({f.arguments})",
            detail={"security_definer": f.security_definer, "language": f.language})


@rule("rls_references_user_metadata", "critical", "security", "Policy trusts user_metadata",
      "user_metadata in a Supabase JWT (raw_user_meta_data in auth.users) is editable by the user "
      "(supabase.auth.updateUser). A policy that takes the tenant or a role from it lets any user pick "
      "their tenant. Use app_metadata, which only the server can write, or a membership table.",
      tags=("weakens-policy", "weakens-table",))
def rls_references_user_metadata(snapshot, metrics, config, *, spec):
    an = analyzer(snapshot, config)
    for t in audited_tables(snapshot, config):
        tcol = tenant_column(t, config)
        for p in t.policies:
            refs: list[str] = []
            for a in (using_analysis(an, t, p, tcol),
                      an.analyze(p.with_check, table=t, tenant_column=tcol) if p.with_check else None):
                if a is not None:
                    refs.extend(r for r in a.user_metadata if r not in refs)
            if not refs:
                continue
            fix = "read the claim from app_metadata (auth.jwt() -> 'app_metadata' ->> '...') or a membership table"
            if in_tenant_scope(snapshot, t, config):
                fix = f"{fix_rls_command(t)}  (or {fix})"
            yield spec.finding(
                t, f'policy "{p.name}" on {t.qualified} trusts user-editable metadata ({"; ".join(refs)}): '
                   f"any user can change it and reach other tenants' rows",
                fix, object=p.name, detail={"references": refs})
