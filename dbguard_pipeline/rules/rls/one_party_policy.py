"""On a two-party table (rows naming two tenants, such as `buyer_org_id` and `seller_org_id`), the policies pin
only some of the parties: the tenant named by the other party column cannot see (or write) the rows it is
party to.

*What it checks.* Every two-party table (see `two_party_table`), per command: the permissive policies that
grant it and pin a party in every branch (`USING` for SELECT, UPDATE and DELETE, `WITH CHECK` else `USING`
for INSERT), and the restrictive ones that apply to it. A party column that none of the permissive policies
pins (or that a restrictive policy leaves out) is reported, once per table and column (`object`), with the
commands in `detail.commands`. Policies that let rows of neither party through are `weak_rls_policy`
findings, not these.

*Why it matters.* Nothing leaks: every row the policies admit names the caller's tenant. But a trade is the
seller's as much as the buyer's; a policy written for one side hides the rows from the other (information,
because isolation holds; raise it with `severity_overrides` when both parties must see their rows).

*How to fix.* Pin the tenant on each side in the same policy.

```sql
-- only the buyer sees the trade
CREATE POLICY trades_read ON public.trades FOR SELECT TO authenticated USING (buyer_org_id = <ctx>);
-- both parties do
ALTER POLICY trades_read ON public.trades USING (buyer_org_id = <ctx> OR seller_org_id = <ctx>);
```
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Optional

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Policy, Table
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.semantics.isolation import ALL_COMMANDS, check_analysis, commands_of, using_analysis
from dbguard_pipeline.text import qname

if TYPE_CHECKING:  # the policy package (pglast) loads with the first policy analysed
    from dbguard_pipeline.policy import ExprAnalysis

SPEC = RuleSpec("one_party_policy", Severity.INFO, "rls", "Two-party rows visible to only one of their parties")


def _analysis(ctx: RuleContext, t: Table, p: Policy, command: str) -> Optional[ExprAnalysis]:
    an = ctx.analyzer
    if command == "insert":
        return check_analysis(an, t, p, None)
    return using_analysis(an, t, p, None)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t in ctx.rls_scope_tables:
        parties = ctx.party_columns(t)
        if not parties or not t.rls_enabled:
            continue
        from dbguard_pipeline.policy.restriction import Level  # pglast: only for a two-party table

        missing: dict[str, list[str]] = {}
        pinned_by: dict[str, set[str]] = {}
        for command in ALL_COMMANDS:
            sides: Optional[set[str]] = None
            limit = set(parties)
            for p in t.policies:
                if command not in commands_of(p) or ctx.policy_is_moot(p):
                    continue
                a = _analysis(ctx, t, p, command)
                if a is None or a.level != Level.TENANT:
                    continue
                if p.permissive:
                    sides = (sides or set()) | set(a.sides)
                else:
                    limit &= set(a.sides)
            if sides is None:
                continue  # no permissive policy pins a party for this command: nothing here to compare
            for col in parties:
                if col not in sides & limit:
                    missing.setdefault(col, []).append(command)
                    pinned_by.setdefault(col, set()).update(sides & limit)
        for col, commands in missing.items():
            others = sorted(pinned_by.get(col, ()))
            yield SPEC.finding(
                t,
                f"on {qname(t.schema, t.name)}, no policy pins {col} to the tenant context for {', '.join(commands).upper()} "
                f"(they pin {', '.join(others) or 'no party'} only): the tenant {col} names cannot "
                f"{'see' if 'select' in commands else 'write'} the rows it is party to",
                f"pin each party in the policy: USING ({' OR '.join(f'{c} = <tenant context>' for c in parties)})",
                object=col,
                detail={"commands": commands, "pinned": others, "parties": list(parties)},
            )
