"""A policy that cannot be evaluated: it reads its own table (or a table whose policies lead back to it), so
every statement that needs it fails with "infinite recursion detected in policy" (SQLSTATE 42P17), and so does
every statement on a table whose policy reads such a table.

*What it checks.* For each table the audit looks at (partitions the application can reach included) and each
command, the policies PostgreSQL adds for the application role (`tenant.app_role`), then, as the rewriter
does, the SELECT policies of every table those policies read in a subquery, and so on. A table that comes
round again is a loop: reported on every table whose statements run into it, the table of the loop itself
and the tables whose policies read it, with the commands that fail and the chain of policies. Typical: a
policy on `memberships` that asks `tenant_id IN (SELECT tenant_id FROM memberships WHERE user_id = auth.uid())`,
and then every table whose policy asks the same of `memberships`.

A SQL function of SECURITY INVOKER in the chain is followed (its queries are the caller's): the loop then
fails at run time, with "stack depth limit exceeded" (54001) as soon as a row is read. A SECURITY DEFINER
function runs as its owner: the chain stops where row level security does not apply to that owner (the
owner of the table without FORCE, or a role that bypasses RLS). Views are followed as PostgreSQL does (as the
view owner, or as the caller for `security_invoker` views). Not followed (so never reported): PL/pgSQL
bodies and names that cannot be resolved.

SELECT policies come in for UPDATE and DELETE too (their WHERE clause reads the rows) and for
`INSERT ... RETURNING`: a loop in a SELECT policy is reported for SELECT, UPDATE and DELETE, and the message
says that inserts returning the row fail as well.

*Why it matters.* The application cannot use those tables at all: every query errors. The usual "fix" found
on forums is to switch row level security off on the membership table, which makes every membership (and
through them every tenant's data) visible to everybody. The probe cannot call such a table isolated either:
nothing can be read or written through it.

*How to fix.* Move the lookup into a SECURITY DEFINER function with a fixed `search_path`, owned by a role that
RLS does not apply to on the membership table (its owner, without FORCE), and call it from the policies. Never
disable row level security to make the error go away.

```sql
-- bad: the policy reads its own table
CREATE POLICY members_read ON public.memberships FOR SELECT TO authenticated
  USING (tenant_id IN (SELECT tenant_id FROM public.memberships WHERE user_id = (select auth.uid())));
-- fix
CREATE FUNCTION public.my_tenant_ids() RETURNS SETOF uuid
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
  AS $$ SELECT tenant_id FROM public.memberships WHERE user_id = (select auth.uid()) $$;
REVOKE EXECUTE ON FUNCTION public.my_tenant_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.my_tenant_ids() TO authenticated;
ALTER POLICY members_read ON public.memberships
  USING (tenant_id IN (SELECT public.my_tenant_ids()));
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.rules.rls._recursion import COMMANDS, Loop, recursion
from dbguard_pipeline.text import qname

SPEC = RuleSpec(
    "policy_infinite_recursion", Severity.CRITICAL, "rls", "Policy that cannot be evaluated (infinite recursion)"
)


def chain_text(loop: Loop) -> str:
    """``policy "p" on a reads b, whose policy "q" reads b itself``."""
    parts: list[str] = []
    for i, step in enumerate(loop.steps):
        through = f" through {step.read.function}()" if step.read.function else ""
        target = step.read.table.qualified
        again = i == len(loop.steps) - 1
        if again and step.read.table.qualified == step.table.qualified:
            target += " itself"
        elif again:
            target += " again"
        lead = (
            f'policy "{step.policy.name}" on {step.table.qualified}' if i == 0 else f'whose policy "{step.policy.name}"'
        )
        parts.append(f"{lead} reads {target}{through}")
    return ", ".join(parts)


def _remedy(loop: Loop) -> str:
    looped = loop.steps[-1].read.table.qualified
    return (
        f"move the lookup of {looped} out of the policies into a SECURITY DEFINER function with a fixed "
        f"search_path (e.g. SET search_path = ''), owned by the owner of {looped} (RLS not forced there), and "
        f"call it from the policies (see docs/rules.md#policy_infinite_recursion); never disable row level "
        f"security on {looped}: that shows every row to everybody"
    )


def check(ctx: RuleContext) -> Iterator[Finding]:
    rec = recursion(ctx)
    app = ctx.config.tenant.app_role
    for t in ctx.rls_tables:
        if not t.policies:
            continue
        # a loop starts with a policy of this table reading a relation: none reads one (most tables), no walk
        if not any(rec.reads(e, app) for p in t.policies for e in (p.using, p.with_check) if e):
            continue
        failing: dict[str, Loop] = {}
        for command in COMMANDS:
            loop = rec.loop(t, app, command)
            if loop is not None:
                failing[command] = loop
        if not failing:
            continue
        first = next(iter(failing.values()))
        commands = [c.upper() for c in failing]
        returning = " (and INSERT ... RETURNING)" if "select" in failing and "insert" not in failing else ""
        yield SPEC.finding(
            t,
            f"{' and '.join(commands) if len(commands) < 3 else ', '.join(commands)} on {qname(t.schema, t.name)}"
            f"{returning} as {app} fail{'s' if len(commands) == 1 and not returning else ''} with SQLSTATE "
            f"{first.sqlstate} ({first.error}): {chain_text(first)}",
            _remedy(first),
            object=first.steps[0].policy.name,
            detail={
                "commands": [c for c in failing],
                "sqlstate": first.sqlstate,
                "role": app,
                "chain": [
                    {
                        "table": s.table.qualified,
                        "policy": s.policy.name,
                        "reads": s.read.table.qualified,
                        "function": s.read.function,
                    }
                    for s in first.steps
                ],
                "loop_table": first.steps[-1].read.table.qualified,
            },
        )
