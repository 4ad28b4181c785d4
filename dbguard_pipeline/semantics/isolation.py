"""Isolation judgments on a table's policies, in PostgreSQL's semantics: permissive policies are OR-ed,
restrictive ones AND-ed with them; a permissive policy without an expression admits nothing, a restrictive
one without an expression restricts nothing; new rows are checked against WITH CHECK, else USING.

Used by the RLS rules and by ``dbguard diff`` (is a changed policy weaker?). The expressions themselves are
read by :class:`dbguard_pipeline.policy.Analyzer`; this module only combines its answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

from dbguard_pipeline.model.schema import Policy, Table

if TYPE_CHECKING:
    from dbguard_pipeline.policy import Analyzer, ExprAnalysis

ALL_COMMANDS = ("select", "insert", "update", "delete")


def commands_of(policy: Policy) -> set[str]:
    return set(ALL_COMMANDS) if policy.command == "all" else {policy.command}


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
    restricted indirectly, except two-party tables (``analysis.parties``): writes must pin one party column in
    every branch (``buyer_id = <ctx> OR seller_id = <ctx>``), so that no row naming two other tenants gets in."""
    if analysis is None:
        return True
    if not analysis.parsed or analysis.always_true:
        return False
    if analysis.parties and strict:
        return analysis.pins_tenant
    if tcol is None or not strict:
        return analysis.restricts
    return analysis.pins_tenant


def _role_covered(restrictive: Policy, permissive: Policy) -> bool:
    if "public" in restrictive.roles:
        return True
    return "public" not in permissive.roles and set(permissive.roles) <= set(restrictive.roles)


def covered_by_restrictive(
    an: Analyzer, table: Table, policy: Policy, tcol: Optional[str], side: Literal["using", "check"]
) -> bool:
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
