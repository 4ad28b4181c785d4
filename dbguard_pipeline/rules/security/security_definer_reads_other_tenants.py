"""A SECURITY DEFINER function runs with its owner's rights. When the owner bypasses row level security and
the body reads a tenant table without tying the rows to the caller, every role that may execute it reads
(or writes) every tenant's rows.

*What it checks.* Functions in the audited schemas that are `SECURITY DEFINER`, are not trigger functions,
may be executed by the app role (`tenant.app_role`, a role whose privileges it inherits, or PUBLIC), and whose
SQL or PL/pgSQL body reads or writes a tenant table (or the tenants table) whose row level security does not
bind the owner (RLS off, or an owner with SUPERUSER or `BYPASSRLS`, or the table's owner while RLS is not
forced), without a condition that ties the rows to the caller: the tenant column compared with the tenant context
(`current_setting(...)`, a JWT claim), a column compared with the caller's identity (`auth.uid()`), or a
membership subquery or helper keyed by the caller, judged by the same analyzer as the policies; a join, a
correlated subquery, or an outer query that pins a derived table or WITH query carries the restriction over.
A filter on a *parameter* (`WHERE org_id = p_org`) ties nothing: the caller chooses the tenant, and the
message says so, unless the body checks the parameter against the caller (`AND is_member(p_org)`, a
membership `EXISTS` on it, or a PL/pgSQL guard `IF NOT is_member(p_org) THEN RAISE EXCEPTION ...`). A
function that only inserts a new tenant (an onboarding function) is not reported for that insert.
**Critical** when the function returns rows (`SETOF`, `TABLE (...)`, a row type) or writes to the table, a
warning when it only reads one and returns a scalar (a count, a flag: still other tenants' data). The
finding's table is the function name and `object` its signature, e.g. `search_customers(q text)`.

Not reported: SECURITY INVOKER functions, trigger functions, functions the app role cannot execute,
membership helpers that read the caller's own rows (`exists (select 1 from members where user_id =
auth.uid() and org_id = $1)`), functions that touch no tenant table, tables whose RLS binds the owner, and
bodies dbguard cannot read (another language, a parse error, dynamic SQL run with `EXECUTE`, SQL-standard
`BEGIN ATOMIC` bodies, the functions a body calls, views it reads).

*Why it matters.* Row level security filters the queries of the roles it binds; a SECURITY DEFINER
function owned by `postgres` (the default owner of every function on Supabase and of every function a
migration tool creates as a superuser) is not bound. A search or report function granted to the
application hands any tenant every tenant's rows, and `test-isolation` does not see it: it probes tables.

*How to fix.* Pin the tenant inside the function, make it run with the caller's rights, or take EXECUTE away
from the application.

```sql
-- bad
CREATE FUNCTION app.search_customers(q text) RETURNS SETOF app.customers LANGUAGE sql SECURITY DEFINER
  SET search_path = '' AS $$ SELECT * FROM app.customers c WHERE c.email LIKE '%' || q || '%' $$;
-- fix: pin the tenant (or check that the caller may read the tenant a parameter names)
CREATE OR REPLACE FUNCTION app.search_customers(q text) RETURNS SETOF app.customers LANGUAGE sql SECURITY DEFINER
  SET search_path = '' AS $$ SELECT * FROM app.customers c WHERE c.email LIKE '%' || q || '%'
  AND c.org_id = nullif(current_setting('app.org_id', true), '')::bigint $$;
-- or: the policies apply again
ALTER FUNCTION app.search_customers(q text) SECURITY INVOKER;
-- or: the application may not call it
REVOKE EXECUTE ON FUNCTION app.search_customers(q text) FROM crm_app;
```
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Function, Table
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.semantics.roles import bypass_text
from dbguard_pipeline.semantics.tenancy import in_audited_schema
from dbguard_pipeline.text import ident, literal, qname, quoted, quoted_qname, role_list

if TYPE_CHECKING:  # the body reader (pglast) loads with the first function read
    from dbguard_pipeline.policy.bodies import Access

SPEC = RuleSpec(
    "security_definer_reads_other_tenants",
    Severity.CRITICAL,
    "security",
    "SECURITY DEFINER function reads other tenants' rows",
    tags=frozenset({"weakens-function"}),
)

_TRIGGERS = ("trigger", "event_trigger")


def _owner_bypasses(ctx: RuleContext, owner: str, table: Table) -> bool:
    """Row level security does not filter the owner's reads of ``table``. A table without RLS counts too: the
    function leaks either way, and a fix that enables RLS on the table must not make this finding new."""
    if ctx.roles.role(owner) is None:
        return True  # an unknown owner: assume the worst
    return not ctx.roles.rls_applies(owner, table)


def _pin_column(ctx: RuleContext, table: Table) -> Optional[str]:
    if ctx.is_tenants_table(table):
        return ctx.config.tenant.tenants_key
    parties = ctx.party_columns(table)
    return ctx.tenant_column(table) or (parties[0] if parties else None)


def _context_text(config: Config, type_text: str) -> str:
    """The tenant context as the remediation names it (the setting or claim of the config, cast to the column's
    type)."""
    tm = config.tenant
    if tm.context == "jwt":
        parts = [p for p in tm.jwt_claim.split(".") if p]
        path = "".join(f" -> {literal(p)}" for p in parts[:-1]) + f" ->> {literal(parts[-1] if parts else '')}"
        return f"(auth.jwt(){path})::{type_text}"
    return f"nullif(current_setting({literal(tm.guc)}, true), '')::{type_text}"


def _why(owner: str, ctx: RuleContext, table: Table) -> str:
    """Why the owner reads every row of ``table``."""
    shown = qname(table.schema, table.name)
    if not table.rls_enabled:
        return f"row level security is off on {shown}"
    r = ctx.roles.role(owner)
    if r is None:
        return f"its owner {ident(owner)} is not in the snapshot"
    text = bypass_text(r)
    if text:
        return f"its owner {ident(owner)} has {text}"
    return f"its owner {ident(owner)} owns {shown} and RLS is not forced"


def check(ctx: RuleContext) -> Iterator[Finding]:
    config = ctx.config
    for fn in ctx.snapshot.functions:
        if not fn.security_definer or not in_audited_schema(fn.schema, config):
            continue
        if fn.returns.strip().lower() in _TRIGGERS or fn.language not in ("sql", "plpgsql"):
            continue
        callers = ctx.roles.execute_grantees(config.tenant.app_role, fn)
        if not callers:
            continue
        accesses = _accesses(ctx, fn)
        if not accesses:
            continue
        leaking: list[Access] = []
        for a in accesses:
            t = a.table
            if a.restricted or not in_audited_schema(t.schema, config) or not ctx.in_tenant_scope(ctx.root(t)):
                continue
            if a.command == "insert" and ctx.is_tenants_table(t):
                continue  # a new tenant (an onboarding function): no other tenant's row
            if not _owner_bypasses(ctx, fn.owner, t):
                continue
            if all(x.table.qualified != t.qualified or x.write != a.write for x in leaking):
                leaking.append(a)
        if not leaking:
            continue
        yield _finding(ctx, fn, callers, leaking)


def _read_body(fn: Function, ctx: RuleContext) -> Optional[tuple[Access, ...]]:
    from dbguard_pipeline.policy.bodies import body_accesses

    return body_accesses(fn, ctx.analyzer, ctx.tenant_column)


def _accesses(ctx: RuleContext, fn: Function) -> Optional[tuple[Access, ...]]:
    return ctx.memo(
        "function_accesses",
        f"{fn.qualified}({fn.arguments})",
        lambda: _read_body(fn, ctx),
    )


def _finding(ctx: RuleContext, fn: Function, callers: list[str], leaking: list[Access]) -> Finding:
    config = ctx.config
    tables = sorted({a.table.qualified: a.table for a in leaking}.values(), key=lambda t: t.qualified)
    names = ", ".join(qname(t.schema, t.name) for t in tables)
    writes = sorted({qname(a.table.schema, a.table.name) for a in leaking if a.write})
    rows = fn.returns_rows
    severity = Severity.CRITICAL if rows or writes else Severity.WARNING
    signature = f"{qname(fn.schema, fn.name)}({fn.arguments})"
    first = tables[0]
    column = _pin_column(ctx, first)
    what = "reads and writes" if writes and len(writes) < len(leaking) else ("writes" if writes else "reads")
    message = (
        f"function {signature} is SECURITY DEFINER and {_why(fn.owner, ctx, first)}: it {what} {names} "
        f"without tying the rows to the caller's tenant, and {role_list(callers)} may execute it"
    )
    if rows:
        message += ": it returns other tenants' rows"
    elif writes:
        message += f": it changes other tenants' rows of {', '.join(writes)}"
    else:
        message += ": what it returns is computed from other tenants' rows"
    params = sorted({a.by_parameter for a in leaking if a.by_parameter})
    if params:
        message += (
            f"; it filters by the parameter {', '.join(params)}, which the caller chooses, without checking that "
            f"the caller may read that tenant"
        )
    column_type = next((c.type for c in first.columns if c.name == column), config.tenant.column_type)
    pin = f"WHERE {quoted(column)} = {_context_text(config, column_type)}" if column else "a condition on the caller"
    args = f"({fn.arguments})"
    target = f"{quoted_qname(fn.schema, fn.name)}{args}"
    grantees = ", ".join("PUBLIC" if g == "public" else quoted(g) for g in callers)
    remediation = (
        f"pin the tenant inside the function ({pin}), or ALTER FUNCTION {target} SECURITY INVOKER; "
        f"or REVOKE EXECUTE ON FUNCTION {target} FROM {grantees};"
    )
    return SPEC.finding(
        (fn.schema, fn.name),
        message,
        remediation,
        object=f"{fn.name}({fn.arguments})",
        severity=severity,
        detail={
            "owner": fn.owner,
            "callers": callers,
            "tables": [t.qualified for t in tables],
            "writes": [a.table.qualified for a in leaking if a.write],
            "returns_rows": rows,
            "parameters": params,
            "language": fn.language,
        },
    )
