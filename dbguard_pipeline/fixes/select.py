"""Which findings a migration can fix, and the ``--all`` selection: one migration per (action, table).

A finding is fixable when its rule declares a ``fix_action`` (``RuleSpec.fix_action``, read through
:func:`dbguard_pipeline.rules.fix_actions`); the CLI's ``--all``, the Dagster job and its sensor use this one map.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.actions import (
    Context,
    NothingToFix,
    plan_add_composite_index,
    plan_add_foreign_key,
    plan_add_tenant_isolation,
    plan_fix_rls_policy,
    resolve_table,
)
from dbguard_pipeline.fixes.actions.add_composite_index import finding_columns
from dbguard_pipeline.fixes.actions.context import why
from dbguard_pipeline.fixes.plan import Migration
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.progress import tick
from dbguard_pipeline.rules import fix_actions
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.text import escape_controls, qname, shell_table_arg

# Finding rule id -> the action that fixes it.
FIXABLE: dict[str, str] = fix_actions()


def fixable_keys(cache_keys: Iterable[object]) -> list[str]:
    """The cache keys (``rule:schema.table[:object]``) among ``cache_keys`` whose rule has a fix action, sorted."""
    return sorted(k for k in cache_keys if isinstance(k, str) and k.split(":", 1)[0] in FIXABLE)


_CHANGES_ACCESS = frozenset({"fix-rls-policy", "add-tenant-isolation"})


@dataclass
class PlanAll:
    migrations: list[Migration]
    skipped: list[str]  # one line each: a group with nothing to fix, a fix already pending, or why it cannot be fixed
    # critical and warning findings that no action fixes (a leaking view, say): a person fixes them by hand
    manual: list[str] = field(default_factory=list)


def _plan_group(
    ctx: Context, action: str, qualified: str, group: list[Finding], tenant_default: Optional[str]
) -> Migration:
    if action == "add-composite-index":
        table = resolve_table(ctx.snapshot, qualified)
        sets = []
        for f in group:
            cols = finding_columns(table, f)
            if cols is None and f.rule == "missing_tenant_index":
                cols = (ctx.config.tenant.column,)
            if cols:
                sets.append(cols)
        return plan_add_composite_index(ctx, qualified, sets, findings=group)
    if action == "add-foreign-key":
        resolve_table(ctx.snapshot, qualified)
        return plan_add_foreign_key(
            ctx, qualified, ctx.config.tenant.tenants_qualified, ctx.config.tenant.column, findings=group
        )
    if action == "fix-rls-policy":
        return plan_fix_rls_policy(ctx, qualified)
    return plan_add_tenant_isolation(ctx, qualified, tenant_default)


def plan_all(
    ctx: Context,
    findings: Optional[Iterable[Finding]] = None,
    pending_fixes: Iterable[str] = (),
    tenant_default: Optional[str] = None,
) -> PlanAll:
    """One migration per (action, table) over the fixable findings that no pending migration file fixes."""
    chosen = list(ctx.findings if findings is None else findings)
    pending = set(pending_fixes)
    groups: dict[tuple[str, str, str], list[Finding]] = {}
    skipped: list[str] = []
    manual: list[str] = []
    for f in chosen:
        action = FIXABLE.get(f.rule)
        if action is None:
            if f.severity.value in ("critical", "warning"):
                manual.append(
                    f"{escape_controls(f.cache_key)} [{f.severity.value}]: no action fixes {f.rule}; see its remediation"
                )
            continue
        if f.cache_key in pending or escape_controls(f.cache_key) in pending:
            skipped.append(f"{f.cache_key}: a migration for it is already in the folder")
            continue
        schema, name = f.schema, f.table
        table = ctx.snapshot.table(f"{schema}.{name}")
        if table is not None and table.kind == "partition" and table.parent:
            # a partition is fixed with its partitioned table (the policies must match the parent's)
            schema, name = table.parent.split(".", 1)
            if action != "fix-rls-policy":
                skipped.append(f"{f.cache_key}: a partition: fix it on {table.parent}")
                continue
            table = ctx.snapshot.table(table.parent)
        if action in _CHANGES_ACCESS and table is not None and tenancy.is_tenants_table(table, ctx.config):
            # only access changes wait for an explicit command; an index or a foreign key on it is planned as usual
            skipped.append(
                f"{f.cache_key}: {qname(table.schema, table.name)} is the tenants table: not part of --all "
                f"(sign-up and directories read and create tenants); run fix-rls-policy "
                f"{shell_table_arg(table.schema, table.name)} explicitly "
                "(SELECT-only by default)"
            )
            continue
        groups.setdefault((action, schema, name), []).append(f)
    out: list[Migration] = []
    tick("planning: fixes", 0, len(groups))
    for done, ((action, schema, table_name), group) in enumerate(sorted(groups.items()), 1):
        tick("planning: fixes", done - 1, len(groups))
        qualified = f"{schema}.{table_name}"
        ctx.notes = []
        try:
            m = _plan_group(ctx, action, qualified, group, tenant_default)
        except NothingToFix as exc:
            skipped.append(f"{action} {qualified}: {exc}")
            continue
        except DbguardError as exc:
            skipped.append(f"{action} {qualified}: cannot fix: {exc}")
            continue
        m.fixes = sorted(set(m.fixes) | {f.cache_key for f in group})
        if not m.why:
            m.why = why(group)
        out.append(m)
    tick("planning: fixes", len(groups), len(groups))
    return PlanAll(out, skipped, manual)
