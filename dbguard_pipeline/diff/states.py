"""The nightly check's side of the diff: a compact state of every audited table's row level security and
policies, small enough to travel in an asset materialization's metadata, and the changes between two such
states, judged by the same :func:`semantics.weakening.judge_policy` as ``dbguard diff``."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any

from dbguard_pipeline.config import Config
from dbguard_pipeline.diff.compare import table_facts
from dbguard_pipeline.diff.run import POLICY_ISOLATION_RULES
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.policy import Analyzer
from dbguard_pipeline.semantics.tenancy import audited_tables
from dbguard_pipeline.semantics.weakening import Judged, TableFacts, judge_tables, newly_flagged


def table_states(snapshot: Snapshot, config: Config) -> dict[str, TableFacts]:
    """Per audited table (by qualified name): RLS flags and each policy's facts. ``TableFacts.to_json`` is the
    compact form a run keeps for the next one."""
    an = Analyzer(snapshot, config)
    return {t.qualified: table_facts(snapshot, t, config, an) for t in audited_tables(snapshot, config)}


def rls_state_changes(
    before: Mapping[str, Any],
    before_findings: Container[str],
    after: Mapping[str, TableFacts],
    after_findings: Iterable[Finding],
) -> list[Judged]:
    """The RLS and policy changes from the state a previous run kept (``TableFacts.to_json`` per table, and the
    cache keys of its findings) to this run's tables (and findings), each with its verdict."""
    previous = {}
    for table, data in before.items():
        facts = TableFacts.from_json(data)
        if facts is not None:
            previous[table] = facts
    flagged = {
        (f"{schema}.{table}", policy): rules
        for (schema, table, policy), rules in newly_flagged(
            after_findings, before_findings, POLICY_ISOLATION_RULES
        ).items()
    }
    return judge_tables(previous, after, flagged)
