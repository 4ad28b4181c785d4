"""The judgment weak_rls_policy and missing_with_check share: does a permissive policy let rows of other
tenants through on reads?"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from dbguard_pipeline.model.schema import Policy, Table
from dbguard_pipeline.semantics.isolation import good_enough, using_analysis

if TYPE_CHECKING:  # the policy package (pglast) loads with the first policy analysed
    from dbguard_pipeline.policy import Analyzer, ExprAnalysis


def weak_using(an: Analyzer, table: Table, policy: Policy, tcol: Optional[str]) -> Optional[ExprAnalysis]:
    """The USING analysis when the permissive ``policy`` lets rows of other tenants through, else None."""
    if not policy.permissive or policy.command == "insert":
        return None
    u = using_analysis(an, table, policy, tcol)
    if u is None or good_enough(u, tcol, strict=False):
        return None
    return u


def commands_text(policy: Policy) -> str:
    return "ALL" if policy.command == "all" else policy.command.upper()
