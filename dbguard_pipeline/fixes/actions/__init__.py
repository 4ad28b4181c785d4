"""Fix migrations from templates: one module per action, each planner returning a :class:`Migration` with its
forward and exact rollback blocks, or raising :class:`NothingToFix` (exit 0, nothing written) or a one-line
:class:`DbguardError` (exit 2, nothing written).

Planners read the schema snapshot; the few data checks that must happen before anything is written (orphans
that would make VALIDATE fail, rows that reach no tenant) run in read-only sessions. Every identifier is
quoted (``text.quoted``, psycopg's ``sql.Identifier``); every value is a literal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.actions.add_composite_index import plan_add_composite_index
from dbguard_pipeline.fixes.actions.add_foreign_key import plan_add_foreign_key
from dbguard_pipeline.fixes.actions.add_tenant_isolation import plan_add_tenant_isolation
from dbguard_pipeline.fixes.actions.context import Context, NothingToFix, build_context, resolve_table
from dbguard_pipeline.fixes.actions.fix_rls_policy import plan_fix_rls_policy
from dbguard_pipeline.fixes.actions.optimize_policy import plan_optimize_policy_action
from dbguard_pipeline.fixes.plan import ACTIONS, Migration

__all__ = [
    "Context",
    "NothingToFix",
    "build_context",
    "plan_action",
    "plan_add_composite_index",
    "plan_add_foreign_key",
    "plan_add_tenant_isolation",
    "plan_fix_rls_policy",
    "plan_optimize_policy_action",
    "replan",
    "resolve_table",
]


def plan_action(
    ctx: Context, action: str, table: str, args: Sequence[str] = (), tenant_default: Optional[str] = None
) -> Migration:
    """The migration ``dbguard generate-migration ACTION TABLE [ARGS...]`` asks for."""
    if action not in ACTIONS:
        raise DbguardError(f"unknown action {action!r} (choose from {', '.join(ACTIONS)})")
    args = list(args)
    if action == "add-composite-index":
        return plan_add_composite_index(ctx, table, [args])
    if action == "add-foreign-key":
        if len(args) > 2:
            raise DbguardError("add-foreign-key takes TABLE [REFTABLE [COLUMN]]")
        return plan_add_foreign_key(ctx, table, args[0] if args else None, args[1] if len(args) > 1 else None)
    if args:
        raise DbguardError(f"{action} takes only TABLE (got extra arguments: {' '.join(args)})")
    if action == "fix-rls-policy":
        return plan_fix_rls_policy(ctx, table)
    if action == "optimize-policy":
        return plan_optimize_policy_action(ctx, table)
    return plan_add_tenant_isolation(ctx, table, tenant_default)


def replan(ctx: Context, m: Migration) -> Migration:
    """Plan the same action again (on a newer snapshot): NothingToFix once the migration has been applied."""
    table = f"{m.schema}.{m.table}"
    if m.action == "add-composite-index":
        return plan_add_composite_index(ctx, table, m.params.get("column_sets") or [])
    if m.action == "add-foreign-key":
        return plan_add_foreign_key(ctx, table, m.params.get("ref"), m.params.get("column"))
    if m.action == "fix-rls-policy":
        return plan_fix_rls_policy(ctx, table)
    if m.action == "optimize-policy":
        return plan_optimize_policy_action(ctx, table)
    return plan_add_tenant_isolation(ctx, table, m.params.get("tenant_default"))
