"""A view runs with its owner's rights unless it is created WITH (security_invoker = true) (PostgreSQL 15+).
When the owner is a superuser, has BYPASSRLS or owns the tables, the view returns every tenant's rows to
whoever may select from it: through the API, to anon and authenticated.

*What it checks.* A view in an exposed schema (`exposed_schemas`, default `public`) that reads RLS-enabled
tables with its owner's rights, is selectable by `anon`, `authenticated`, PUBLIC or the app role, and whose
owner bypasses those tables' RLS (superuser, `BYPASSRLS`, or owner of a table whose RLS is not forced).
Followed through chains of views: a `security_invoker` view that reads a definer view in a private schema is
reported too. Materialized views over RLS tables that API roles can read are reported as well (RLS never
applies to them).

*Why it matters.* Views run with their owner's rights unless created `WITH (security_invoker = true)`
(PostgreSQL 15+). On Supabase, views are owned by `postgres` and exposed through the API: a plain
`CREATE VIEW` over an isolated table hands every tenant's rows to anyone with the anon key. Views whose owner
is subject to RLS, views nobody in the API can select, and views over tables without RLS (reported by the RLS
rules themselves) are not reported.

*How to fix.*

```sql
-- bad
CREATE VIEW public.vehicle_overview AS SELECT v.id, v.tenant_id, v.vin FROM public.vehicles v;
-- fix (PostgreSQL 15+)
ALTER VIEW public.vehicle_overview SET (security_invoker = true);
-- PostgreSQL 13/14: REVOKE SELECT ON public.vehicle_overview FROM anon, authenticated; or move it to a private schema
```
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Snapshot, Table, View
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.semantics.roles import API_GRANTEES, RoleGraph, bypasses_rls
from dbguard_pipeline.text import ident, qname, role_list

SPEC = RuleSpec(
    "security_definer_view",
    Severity.CRITICAL,
    "security",
    "View in an exposed schema bypasses row level security",
    tags=frozenset({"weakens-view"}),
)


def _rls_tables_read(snapshot: Snapshot, view: View) -> list[tuple[Table, str, tuple[str, str]]]:
    """RLS-enabled tables the view reads with somebody else's rights than the caller's, with that role:
    a definer view reads with its owner's rights; a security_invoker view with the caller's, and a
    definer view it reads (directly or through other views) switches to that view's owner.
    Returns (table, role, the definer view whose owner's rights apply)."""
    views = {v.qualified: v for v in snapshot.views}
    out: list[tuple[Table, str, tuple[str, str]]] = []
    seen: set[tuple[str, Optional[str]]] = set()
    invoker = view.security_invoker and not view.materialized
    todo: list[tuple[View, Optional[str], Optional[tuple[str, str]]]] = [
        (view, None if invoker else view.owner, None if invoker else (view.schema, view.name))
    ]
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
            if t is not None and t.qualified == dep and t.rls_enabled and runner is not None and via is not None:
                out.append((t, runner, via))
    return out


def _bypasses(snapshot: Snapshot, role: str, table: Table, graph: RoleGraph) -> bool:
    r = snapshot.role(role)
    if r is None:
        return True  # unknown owner: assume the worst
    if bypasses_rls(r):
        return True
    # the owner, or a member that inherits the owner's privileges, is the owner for RLS
    return graph.acts_as_owner(role, table) and not table.rls_forced


def _revoke(view: str, grantees: list[str]) -> str:
    return f"REVOKE SELECT ON {view} FROM {', '.join('PUBLIC' if g == 'public' else ident(g) for g in grantees)};"


def check(ctx: RuleContext) -> Iterator[Finding]:
    snapshot = ctx.snapshot
    exposed = set(ctx.config.exposed_schemas)
    app = ctx.config.tenant.app_role
    for v in snapshot.views:
        if v.schema not in exposed:
            continue
        grantees = sorted(
            {g.grantee for g in v.grants if g.privilege == "SELECT" and (g.grantee in API_GRANTEES or g.grantee == app)}
        )
        if not grantees:
            continue
        reads = [
            (t, via) for t, runner, via in _rls_tables_read(snapshot, v) if _bypasses(snapshot, runner, t, ctx.roles)
        ]
        leaking = sorted({t.qualified for t, _ in reads})
        definers = sorted({via for _, via in reads})
        if not leaking:
            continue
        q = qname(v.schema, v.name)
        who = role_list(grantees)
        if v.materialized:
            message = (
                f"materialized view {qname(v.schema, v.name)} stores rows of {', '.join(leaking)} read with the rights of "
                f"{ident(v.owner)}, and {who} can select from it: row level security does not apply to it"
            )
            fix = f"{_revoke(q, grantees)}  (or move it to a schema the API does not expose)"
        elif v.security_invoker:
            message = (
                f"view {qname(v.schema, v.name)} is security_invoker but reads {', '.join(leaking)} through a view that "
                f"runs with its owner's rights, and {who} can select from it: it bypasses their policies"
            )
            fix = " ".join(f"ALTER VIEW {qname(*d)} SET (security_invoker = true);" for d in definers)
        else:
            message = (
                f"view {qname(v.schema, v.name)} runs with the rights of its owner {ident(v.owner)} over {', '.join(leaking)} "
                f"(row level security enabled) and {who} can select from it: it bypasses their policies"
            )
            if snapshot.server_version_num >= 150000:
                fix = f"ALTER VIEW {q} SET (security_invoker = true);"
            else:
                fix = (
                    f"{_revoke(q, grantees)}"
                    f"  (PostgreSQL < 15 has no security_invoker views: move it out of the exposed schema)"
                )
        yield SPEC.finding(
            (v.schema, v.name),
            message,
            fix,
            detail={
                "owner": v.owner,
                "grantees": grantees,
                "tables": leaking,
                "definer_views": [f"{a}.{b}" for a, b in definers],
                "materialized": v.materialized,
            },
        )
