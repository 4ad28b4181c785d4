"""docs/rules.md, generated from the registry: an introduction, an index of the rules, then one section per
rule from its spec and its module docstring.

    python -m dbguard_pipeline.rules.docs > docs/rules.md

dbguard_tests/test_rules_complete.py fails when docs/rules.md differs from what this prints.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterable

from dbguard_pipeline.rules import REGISTRY, RuleSpec, category_order

TITLE = "# dbguard rules"

INTRO = """\
Every finding carries a rule id, a severity, a category, the table (and object: policy, index, constraint or
column) it is about, a message, a remediation (the `dbguard` command that fixes it, or the SQL where no
command exists) and a stable cache key `rule:schema.table[:object]`. **Rule ids and cache keys are a public
contract**: put cache keys under `ignore:` in `dbguard.yaml` to accept a finding (it is then counted as
ignored, not dropped), and run a subset with `dbguard validate --rule ID ...`.

This page is generated from the rules themselves (`python -m dbguard_pipeline.rules.docs > docs/rules.md`):
each rule is one module, `dbguard_pipeline/rules/<category>/<rule id>.py`, whose docstring is its section
below, and has its test cases in `dbguard_tests/rules/cases/<rule id>.yaml`.
"""

# How the rules read the schema: shared by every section below.
SEMANTICS = """\
## Which tables, which tenant

* **Audited tables**: every table outside the platform schemas (`auth`, `storage`, `extensions`, `realtime`,
  ... see `exclude_schemas`), or only the schemas listed under `schemas:`. A partitioned table is audited as
  one table (its partitions are not reported separately).
* **Tenant column**: `tenant.column` (default `tenant_id`); for the tenants table itself (`tenant.tenants_table`,
  default `public.tenants`) it is its key (`tenant.tenants_key`, default `id`).
* **Tenant tables**: tables with the tenant column, and tables that reach one through foreign keys (for
  example `conversation_messages -> conversations.tenant_id`).
* **Two-party tables**: rows naming two tenants (`buyer_org_id`, `seller_org_id`): listed in
  `tenant.table_tenant_columns`, or without the tenant column and with two or more foreign keys to the tenants
  table. A policy isolates them when every branch that can be true pins one party column to the tenant
  context (`buyer_org_id = ctx OR seller_org_id = ctx`, `ctx IN (buyer_org_id, seller_org_id)`, a membership
  `EXISTS` matching either); see `two_party_table` and `one_party_policy`.
* **Tenant context**: how the application tells the database who the tenant is (`tenant.context`: `guc` with
  `tenant.guc`, default `app.current_tenant_id`; or `jwt` with `tenant.jwt_claim`, default `tenant_id`), plus
  any function listed in `tenant.context_functions`.

## How policies are read

dbguard parses every `USING` and `WITH CHECK` expression with the real PostgreSQL parser (pglast, libpg_query)
as PostgreSQL prints it (`pg_get_expr`), and works on the parse tree, so spelling, parentheses, casts, quoting
and letter case do not matter. `dbguard_pipeline/policy/analyzer.py` answers three questions:

1. **Is it always true?** Constant folding with SQL's three-valued logic: `true`, `1 = 1`, `'a' = 'a'`,
   `(select true)`, `tenant_id = tenant_id`, `true or ...`, `not false`, `coalesce(true, ...)`,
   `x is not null or true`, `'t'::boolean`, `case ... then true else true end`, `1 in (1, 2)`,
   `exists (select 1)`, and a SQL function whose body is `select true`.
2. **Does it pin the tenant?** Every branch that can be true (OR-ed branches are each checked, AND-ed
   conjuncts need only one) compares the tenant column with the tenant context. Recognised contexts:
   * the GUC: `current_setting('app.current_tenant_id'[, true])`, with or without `nullif(..., '')`, casts
     (`::uuid`, `::bigint`, `::text`, `CAST(... AS ...)`), `coalesce` with a constant, wrapped in
     `(select ...)`; other custom settings whose name says tenant/org/account/workspace/team/company;
   * Supabase JWT claims: `auth.jwt() ->> 'tenant_id'`, `auth.jwt() -> 'app_metadata' ->> 'tenant_id'`,
     `#>> '{app_metadata,tenant_id}'`, `current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id'`,
     `request.jwt.claim.tenant_id`; lists of tenants in the token (`... -> 'tenant_ids' ? tenant_id::text`,
     `@> to_jsonb(tenant_id)`, `jsonb_array_elements_text(...)`);
   * functions: a SQL or PL/pgSQL function whose body returns one of these (`public.current_tenant_id()`,
     `get_my_claim('tenant_id')`, a PL/pgSQL `SELECT ... INTO v ...; RETURN v;`), or one named in
     `tenant.context_functions`;
   * membership: `tenant_id IN (SELECT tenant_id FROM user_tenants WHERE user_id = auth.uid())`,
     `tenant_id = ANY (ARRAY(SELECT ...))`, `tenant_id IN (SELECT my_tenants())`,
     `EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = t.tenant_id AND m.user_id = (select auth.uid()))`,
     a scalar lookup `tenant_id = (SELECT tenant_id FROM profiles WHERE id = auth.uid())`, and boolean helper
     functions such as `is_member_of(tenant_id)` or basejump's `has_role_on_account(account_id)`, whose
     body is analysed with the call's arguments (defaults taken as NULL);
   * a subquery over a table that row level security already restricts to the caller: policies are applied
     inside policy subqueries, so `tenant_id IN (SELECT tenant_id FROM user_tenants)` is a membership check
     when `user_tenants` shows each user only their own rows, and
     `EXISTS (SELECT 1 FROM projects p WHERE p.id = project_id)` restricts a child to the visible parents.
     Not inside `SECURITY DEFINER` functions, whose owner usually bypasses RLS;
   * the caller's identity when the tenant column is compared with it (`tenant_id::text = current_user`
     for role-per-tenant designs, `tenant_id = auth.uid()` for personal accounts).

   A branch that is true only for a role that bypasses RLS anyway (`auth.role() = 'service_role'`,
   `auth.jwt() ->> 'role' = 'service_role'`, `current_user = 'postgres'`) opens nothing to ordinary clients
   and is ignored: `auth.role() = 'service_role' OR tenant_id = ctx` pins the tenant.

   Not pinned: `tenant_id = ctx OR is_public`, `... OR is_admin()`, `... OR ctx IS NULL`,
   `tenant_id = coalesce(ctx, tenant_id)`, `tenant_id IN (SELECT tenant_id FROM user_tenants)` (no user),
   an `EXISTS` that is not correlated with the row, or whose correlation compares the inner table with itself
   (`WHERE tenant_id = tenant_id` inside the subquery resolves to the inner column: PostgreSQL prints it as
   `user_tenants.tenant_id = user_tenants.tenant_id`).
3. **Does it restrict rows to the caller some other way?** `owner_id = auth.uid()`,
   `auth.uid() = ANY (member_ids)`, or a correlated subquery through a parent row that is pinned
   (`EXISTS (SELECT 1 FROM projects p WHERE p.id = project_id AND p.tenant_id = ctx)`). Such a policy does
   not leak other tenants' rows on **reads**, so it is not a `weak_rls_policy`; it does not stop a **write**
   from naming another tenant, so as a write check it is a `missing_with_check`.

Text that cannot be parsed never stops the audit: the policy is treated as not restricting anything (a
`weak_rls_policy` / `missing_with_check` finding whose detail has `parsed: false` and the parser's message).

Policy semantics dbguard applies: permissive policies are OR-ed, restrictive ones AND-ed; a permissive policy
without an expression admits nothing; a restrictive one without an expression restricts nothing. A permissive
policy only for roles that bypass RLS anyway (superuser, `BYPASSRLS`, e.g. Supabase's `service_role`) is moot
and not reported. A weak permissive policy is not reported when RESTRICTIVE policies pin the tenant for every
command and role it grants.
"""


def _index(specs: Iterable[RuleSpec]) -> list[str]:
    lines = ["| id | severity | category | what | fixed by |", "|---|---|---|---|---|"]
    for s in specs:
        fix = f"`{s.fix_action}`" if s.fix_action else ""
        lines.append(f"| [{s.id}](#{s.id}) | {s.severity.value} | {s.category} | {s.title} | {fix} |")
    return lines


def _kinds(specs: list[RuleSpec]) -> str:
    static = [s for s in specs if not s.needs_metrics]
    data = [s for s in specs if s.needs_metrics]

    def categories(group: list[RuleSpec]) -> str:
        names = [f"`{c}`" for c in dict.fromkeys(s.category for s in group)]
        return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)

    text = (
        f"The {len(static)} rules of {categories(static)} are *static*: they read only the schema snapshot, "
        f"never the data, and run in well under a second on a thousand tables. The {len(data)} rules of "
        f"{categories(data)} read the data metrics (one scan per table) and are skipped when no metrics "
        f"were taken."
    )
    return textwrap.fill(text, width=110, break_long_words=False, break_on_hyphens=False)


def _in_order(specs: Iterable[RuleSpec]) -> list[RuleSpec]:
    """By category, then the most severe first, then by id."""
    return sorted(specs, key=lambda s: (category_order(s.category), -s.severity.rank, s.id))


def _section(s: RuleSpec) -> list[str]:
    facts = [
        f"**{s.severity.value.capitalize()}**",
        f"category `{s.category}`",
        "reads the data" if s.needs_metrics else "static",
    ]
    if s.fix_action:
        facts.append(f"fixed by `dbguard generate-migration {s.fix_action} TABLE`")
    return [f"## {s.id}", "", f"*{s.title}.* " + " · ".join(facts) + ".", "", s.doc]


def render() -> str:
    specs = _in_order(REGISTRY.values())
    parts = [TITLE, INTRO.rstrip(), "\n".join(_index(specs)), _kinds(specs), SEMANTICS.rstrip(), "---"]
    parts += ["\n".join(_section(s)).rstrip() for s in specs]
    return "\n\n".join(parts) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
