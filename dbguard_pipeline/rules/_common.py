"""Helpers shared by the static rule modules (rls, tenancy, performance, security)."""
from __future__ import annotations

import re
import shlex
from typing import Iterable, Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.schema import Policy, Snapshot, Table
from dbguard_pipeline.policy import Analyzer, ExprAnalysis, analyzer_for
from dbguard_pipeline.semantics.roles import API_ROLES, bypass_roles, policy_is_moot  # noqa: F401
from dbguard_pipeline.semantics.tenancy import audited_tables, is_tenant_table, is_tenants_table

ALL_COMMANDS = ("select", "insert", "update", "delete")

_SIMPLE = re.compile(r"[a-z_][a-z0-9_$]*")


def _keywords() -> frozenset:
    from pglast import keywords

    return frozenset(keywords.RESERVED_KEYWORDS) | frozenset(keywords.TYPE_FUNC_NAME_KEYWORDS) | frozenset(
        keywords.COL_NAME_KEYWORDS)


_KEYWORDS: Optional[frozenset] = None


def ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL's quote_ident does (only when needed)."""
    global _KEYWORDS
    if _KEYWORDS is None:
        _KEYWORDS = _keywords()
    if _SIMPLE.fullmatch(name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def qname(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def table_arg(schema: str, name: str) -> str:
    """The TABLE argument of a dbguard command, ready to paste into a shell: ``public.garages``, or the
    quoted SQL name in shell quotes for names that need quoting (``'"My Schema"."Tbl"'``)."""
    text = qname(schema, name)
    return text if text == f"{schema}.{name}" else shlex.quote(text)


def roles_text(roles: Iterable[str]) -> str:
    return ", ".join("PUBLIC" if r == "public" else r for r in roles)


def commands_of(policy: Policy) -> set[str]:
    return set(ALL_COMMANDS) if policy.command == "all" else {policy.command}


def in_tenant_scope(snapshot: Snapshot, table: Table, config: Config) -> bool:
    """Tables whose rows belong to tenants: tenant tables and the tenants table itself."""
    return is_tenants_table(table, config) or is_tenant_table(snapshot, table, config)


def tenant_scope_tables(snapshot: Snapshot, config: Config) -> list[Table]:
    return [t for t in audited_tables(snapshot, config) if in_tenant_scope(snapshot, t, config)]


def using_analysis(an: Analyzer, table: Table, policy: Policy, tcol: Optional[str]) -> Optional[ExprAnalysis]:
    return an.analyze(policy.using, table=table, tenant_column=tcol) if policy.using else None


def check_analysis(an: Analyzer, table: Table, policy: Policy, tcol: Optional[str]) -> Optional[ExprAnalysis]:
    """The expression PostgreSQL checks new rows against: WITH CHECK, else USING (not for INSERT)."""
    if policy.with_check:
        return an.analyze(policy.with_check, table=table, tenant_column=tcol)
    if policy.command != "insert" and policy.using:
        return an.analyze(policy.using, table=table, tenant_column=tcol)
    return None


def good_enough(analysis: Optional[ExprAnalysis], tcol: Optional[str], *, strict: bool) -> bool:
    """Whether an expression isolates tenants. ``None`` (no expression) denies everything: fine.
    strict: the tenant column itself must be pinned (writes); otherwise restricting the rows to the caller
    some other way (owner, parent row) is enough (reads). Tables without a tenant column can only be
    restricted indirectly."""
    if analysis is None:
        return True
    if not analysis.parsed or analysis.always_true:
        return False
    if tcol is None or not strict:
        return analysis.restricts
    return analysis.pins_tenant


def _role_covered(restrictive: Policy, permissive: Policy) -> bool:
    if "public" in restrictive.roles:
        return True
    return "public" not in permissive.roles and set(permissive.roles) <= set(restrictive.roles)


def covered_by_restrictive(an: Analyzer, table: Table, policy: Policy, tcol: Optional[str], side: str) -> bool:
    """True when RESTRICTIVE policies pin the tenant for every command and role this permissive policy
    grants (side "using": reads; side "check": writes). Restrictive policies are AND-ed with the
    permissive ones, so a weak permissive policy is then harmless."""
    relevant = {"select", "update", "delete"} if side == "using" else {"insert", "update"}
    commands = commands_of(policy) & relevant
    if not commands:
        return False
    restrictive = [r for r in table.policies if not r.permissive and _role_covered(r, policy)]
    for cmd in commands:
        ok = False
        for r in restrictive:
            if r.command not in ("all", cmd):
                continue
            # a restrictive policy without an expression restricts nothing
            text = r.using if side == "using" else (r.with_check or r.using)
            a = an.analyze(text, table=table, tenant_column=tcol) if text else None
            ok = a is not None and good_enough(a, tcol, strict=True)
            if ok:
                break
        if not ok:
            return False
    return True


def analyzer(snapshot: Snapshot, config: Config) -> Analyzer:
    return analyzer_for(snapshot, config)


def fix_rls_command(table: Table) -> str:
    return f"dbguard generate-migration fix-rls-policy {table_arg(table.schema, table.name)}"
