"""Helpers shared by rules of several categories.

``check_analysis``, ``good_enough``, ``using_analysis`` (:mod:`dbguard_pipeline.semantics.isolation`),
``policy_is_moot`` (:mod:`dbguard_pipeline.semantics.roles`), ``ident`` and ``roles_text``
(:mod:`dbguard_pipeline.text`) are re-exported for the callers that still import them from here
(diff/compare.py); new code imports them from their home.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from dbguard_pipeline.model.schema import Policy, Table
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.semantics.isolation import check_analysis, good_enough, using_analysis
from dbguard_pipeline.semantics.roles import policy_is_moot
from dbguard_pipeline.text import ident, qname, shell_table_arg
from dbguard_pipeline.text import role_list as roles_text

if TYPE_CHECKING:  # the policy package (pglast) loads with the first policy analysed
    from dbguard_pipeline.policy import ExprAnalysis

__all__ = [
    "check_analysis",
    "fix_rls_command",
    "good_enough",
    "ident",
    "policies_with",
    "policy_is_moot",
    "roles_text",
    "using_analysis",
]


def fix_rls_command(table: Table, root: Table | None = None) -> str:
    """The fix-rls-policy command for ``table``; for a partition, the command on its root partitioned table
    (the action covers the partitions) or the statement that closes the partition itself."""
    if root is not None and root.qualified != table.qualified:
        return (
            f"dbguard generate-migration fix-rls-policy {shell_table_arg(root.schema, root.name)}  (covers its "
            f"partitions; or: ALTER TABLE {qname(table.schema, table.name)} ENABLE ROW LEVEL SECURITY; with "
            f"no policy of its own, queries that name the partition see no row and those through "
            f"{qname(root.schema, root.name)} are unchanged)"
        )
    return f"dbguard generate-migration fix-rls-policy {shell_table_arg(table.schema, table.name)}"


def policies_with(
    ctx: RuleContext, items: Callable[[ExprAnalysis], tuple[str, ...]]
) -> Iterator[tuple[Table, Policy, list[str]]]:
    """(table, policy, what ``items`` finds in it) for every policy of the audited tables where it finds something."""
    for t in ctx.audited_tables:
        for p in t.policies:
            found: list[str] = []  # in the order of USING, then WITH CHECK, without repeats
            for analysis in ctx.policy_analyses(t, p):
                if analysis is not None:
                    found.extend(x for x in items(analysis) if x not in found)
            if found:
                yield t, p, found
