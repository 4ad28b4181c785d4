"""Row level security policies of a table, judged by :func:`semantics.weakening.judge_policy` on the facts
the policy analyzer gives for each side (the nightly ``no_policy_weakened`` check asks the same function)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.diff.compare._walk import Context, attrs, pairs, table_item
from dbguard_pipeline.diff.result import ADDED, CHANGED, REMOVED, AttributeChange, Change
from dbguard_pipeline.model.schema import Policy, Snapshot, Table
from dbguard_pipeline.policy import Analyzer, ExprAnalysis
from dbguard_pipeline.semantics.isolation import check_analysis, good_enough, using_analysis
from dbguard_pipeline.semantics.roles import bypass_roles, policy_is_moot
from dbguard_pipeline.semantics.tenancy import tenant_column
from dbguard_pipeline.semantics.weakening import (
    ExprFacts,
    PolicyFacts,
    TableFacts,
    expressions_fingerprint,
    judge_policy,
)


def policy_facts(snapshot: Snapshot, table: Table, policy: Policy, config: Config, an: Analyzer) -> PolicyFacts:
    """What the weakening judgment needs to know of ``policy`` on ``table`` in ``snapshot`` (``an``: the policy
    analyzer of ``snapshot``, held by the caller for all its policies)."""
    tcol = tenant_column(table, config)

    def facts(analysis: Optional[ExprAnalysis]) -> Optional[ExprFacts]:
        if analysis is None:
            return None
        return ExprFacts(good_enough(analysis, tcol, strict=True), analysis.describe())

    return PolicyFacts(
        permissive=policy.permissive,
        command=policy.command,
        roles=tuple(sorted(policy.roles)),
        expressions=expressions_fingerprint(policy.using, policy.with_check),
        using=facts(using_analysis(an, table, policy, tcol)),
        check=facts(check_analysis(an, table, policy, tcol)),
        has_with_check=bool(policy.with_check),
        tenant_column=tcol is not None,
        moot=policy_is_moot(policy, snapshot),
        bypass=frozenset(bypass_roles(snapshot)),
    )


def table_facts(snapshot: Snapshot, table: Table, config: Config, an: Analyzer) -> TableFacts:
    return TableFacts(
        table.rls_enabled,
        table.rls_forced,
        {p.name: policy_facts(snapshot, table, p, config, an) for p in table.policies},
    )


def compare_policies(ctx: Context, ta: Table, tb: Table) -> Iterator[Change]:
    for name, old, new in pairs(ta.policies, tb.policies, lambda p: p.name):
        if old is None:
            c = table_item(tb, ADDED, "policy", name, after=new)
        elif new is None:
            c = table_item(tb, REMOVED, "policy", name, before=old)
        else:
            changed = attrs(old, new, ("permissive", "command", "using", "with_check"))
            roles = tuple(sorted(old.roles)), tuple(sorted(new.roles))
            if roles[0] != roles[1]:
                changed += (AttributeChange("roles", *roles),)
            if not changed:
                continue
            c = table_item(tb, CHANGED, "policy", name, attributes=changed)
        verdict = judge_policy(
            None if old is None else policy_facts(ctx.a, ta, old, ctx.config, ctx.analyzer(ctx.a)),
            None if new is None else policy_facts(ctx.b, tb, new, ctx.config, ctx.analyzer(ctx.b)),
            ctx.flagged_policies.get((tb.schema, tb.name, name), ()),
        )
        c = c.weaken(*verdict.reasons)
        yield replace(c, note=verdict.note) if verdict.note else c
