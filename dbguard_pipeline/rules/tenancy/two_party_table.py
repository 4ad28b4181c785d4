"""The table's rows name more than one tenant (a buyer and a seller, a sender and a receiver): it is two-party
data, not single-tenant data, and is audited and probed from each side.

*What it checks.* Every audited table that `tenant.table_tenant_columns` lists with two or more columns, or
that has no tenant column and two or more single-column foreign keys to the tenants table. One finding per
table (information only); `detail.parties` lists the party columns. Its policies are then judged per party:
a policy isolates the table when every branch that can be true pins one party column to the tenant context
(`buyer_org_id = <ctx> OR seller_org_id = <ctx>`); `one_party_policy` reports policies that pin only some of
the parties, `weak_rls_policy` those that let rows of neither party through. The isolation probe tests from
each side: tenant A must not read, change or delete rows where it is neither party, nor insert a row naming
only other tenants.

*Why it matters.* A single tenant column would pick one party and lock the other out, so
`add-tenant-isolation` refuses such a table, and `missing_tenant_column` does not report it.

*How to fix.* Nothing to fix: keep a policy that pins each party, and name the columns in the config when
they are not foreign keys to the tenants table.

```yaml
tenant:
  table_tenant_columns:
    public.trades: [buyer_org_id, seller_org_id]
```
```sql
CREATE POLICY trades_parties ON public.trades TO authenticated
  USING (buyer_org_id = (select auth.jwt() ->> 'org')::uuid OR seller_org_id = (select auth.jwt() ->> 'org')::uuid);
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.text import qname

SPEC = RuleSpec("two_party_table", Severity.INFO, "tenancy", "Rows that belong to more than one tenant")


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t in ctx.audited_tables:
        parties = ctx.party_columns(t)
        if not parties:
            continue
        yield SPEC.finding(
            t,
            f"{qname(t.schema, t.name)} is two-party data: each row names {len(parties)} tenants ({', '.join(parties)}); "
            "its policies must pin the tenant on each side they admit, and it is probed from each side",
            "nothing to fix; add-tenant-isolation does not apply (a single tenant column would lock a party out)",
            detail={"parties": list(parties)},
        )
