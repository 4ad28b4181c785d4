"""PostgreSQL evaluates every permissive policy that applies to a role and command and ORs them; several of
them cost a query each row's worth of work, and the widest one decides what is visible.

*What it checks.* Several permissive policies apply to the same role and command (the roles the policies name,
the app role and Supabase's `anon` and `authenticated` when they exist; roles that bypass RLS left out). One
finding per table and set of policies (`object` lists them); the detail lists the roles and commands.

*Why it matters.* Every one of them is evaluated and OR-ed for every row: the cost adds up, and the widest
policy alone decides what is visible, which makes isolation harder to review.

*How to fix.* Merge them into one policy per role and command, or make the extra conditions RESTRICTIVE.

```sql
-- bad
CREATE POLICY a ON public.docs FOR SELECT TO authenticated USING (tenant_id = (select public.current_tenant_id()));
CREATE POLICY b ON public.docs FOR SELECT TO authenticated USING (owner_id = (select auth.uid()));
-- fix
DROP POLICY a ON public.docs; DROP POLICY b ON public.docs;
CREATE POLICY docs_read ON public.docs FOR SELECT TO authenticated
  USING (tenant_id = (select public.current_tenant_id()) OR owner_id = (select auth.uid()));
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules._common import fix_rls_command
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.semantics.isolation import ALL_COMMANDS
from dbguard_pipeline.semantics.roles import API_ROLES
from dbguard_pipeline.text import ident, qname

SPEC = RuleSpec(
    "multiple_permissive_policies",
    Severity.WARNING,
    "performance",
    "Several permissive policies for one role and command",
)


def check(ctx: RuleContext) -> Iterator[Finding]:
    known = {r.name for r in ctx.snapshot.roles}
    for t in ctx.audited_tables:
        permissive = [p for p in t.policies if p.permissive]
        if len(permissive) < 2:
            continue
        roles = {r for p in permissive for r in p.roles if r != "public"}
        roles |= {r for r in (ctx.config.tenant.app_role, *API_ROLES) if r in known}
        roles -= ctx.bypass_roles
        groups: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        for role in sorted(roles):
            for cmd in ALL_COMMANDS:
                hits = tuple(
                    sorted(
                        p.name
                        for p in permissive
                        if ("public" in p.roles or role in p.roles) and p.command in ("all", cmd)
                    )
                )
                if len(hits) > 1:
                    groups.setdefault(hits, []).append((role, cmd))
        for names, pairs in sorted(groups.items()):
            who = ", ".join(f"{cmd.upper()} as {role}" for role, cmd in pairs)
            yield SPEC.finding(
                t,
                f"{qname(t.schema, t.name)} has {len(names)} permissive policies ({', '.join(ident(n) for n in names)}) for {who}: "
                f"all are evaluated and OR-ed for every row",
                f"merge them into one policy per role and command (CREATE POLICY ... USING (a OR b)), or make "
                f"the extra conditions RESTRICTIVE; for tenant tables: {fix_rls_command(t)}",
                object=", ".join(names),
                detail={
                    "policies": list(names),
                    "roles": sorted({r for r, _ in pairs}),
                    "commands": sorted({c for _, c in pairs}),
                },
            )
