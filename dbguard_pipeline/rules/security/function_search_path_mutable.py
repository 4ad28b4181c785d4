"""A function that does not set search_path resolves names through the caller's search_path. A caller who can
create objects in a schema on that path can make it run their code, with the function owner's rights when it
is SECURITY DEFINER.

*What it checks.* Every function (SQL, PL/pgSQL, ...; not C or internal) in an audited schema that does not
set `search_path`. The finding's table is the function name and `object` its signature, e.g.
`loose(a integer)`.

*Why it matters.* The function resolves unqualified names through the caller's `search_path`. Anyone who can
create objects in a schema on that path can make it call their own `=` operator, function or table, with the
owner's rights when the function is `SECURITY DEFINER` (a privilege escalation; Supabase linter 0011).

*How to fix.*

```sql
-- bad
CREATE FUNCTION public.current_tenant_id() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid $$;
-- fix
ALTER FUNCTION public.current_tenant_id() SET search_path = '';   -- and schema-qualify names in the body
```
"""

from __future__ import annotations

from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.text import qname

SPEC = RuleSpec("function_search_path_mutable", Severity.WARNING, "security", "Function without a fixed search_path",
                tags=frozenset({"weakens-function"}))


def check(ctx: RuleContext) -> Iterator[Finding]:
    explicit = set(ctx.config.schemas)
    for f in ctx.snapshot.functions:
        if explicit and f.schema not in explicit:
            continue
        if not explicit and f.schema in ctx.config.exclude_schemas:
            continue
        if f.language in ("c", "internal") or f.search_path is not None:
            continue
        definer = " (SECURITY DEFINER)" if f.security_definer else ""
        yield SPEC.finding(
            (f.schema, f.name), f"function {f.schema}.{f.name}({f.arguments}){definer} does not set search_path",
            f"ALTER FUNCTION {qname(f.schema, f.name)}({f.arguments}) SET search_path = '';  "
            f"(then schema-qualify the names its body uses)",
            object=f"{f.name}({f.arguments})",
            detail={"security_definer": f.security_definer, "language": f.language})
