"""Every rule's case file (dbguard_tests/rules/cases/<rule_id>.yaml, described in dbguard_tests/rules/support.py)
against the real server: each case's exact set of cache keys, no finding for the negatives, and, where a case
says ``fix: true``, the fix migrations dbguard generates applied to the database -> no finding left."""

from __future__ import annotations

from typing import Any

import pytest

from dbguard_pipeline import rules
from dbguard_pipeline.audit import collect_data
from dbguard_pipeline.config import Config
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.pg.catalog import introspect

from .conftest import run_sql
from .rules.support import Case, all_cases, only_keys

CASES = all_cases()


def audit(dsn: str, case: Case, config: Config) -> list[Finding]:
    snap = introspect(dsn)
    measure = rules.REGISTRY[case.rule].needs_metrics or case.metrics
    metrics = collect_data(dsn, snap, config) if measure else None
    return rules.run_rules(snap, metrics, config, only=[case.rule])


def check_finding(f: Finding, want: dict[str, Any]) -> None:
    if "severity" in want:
        assert f.severity.value == want["severity"], f.cache_key
    if "remediation" in want:
        assert f.remediation == want["remediation"], f.cache_key
    for part in want.get("message_contains", ()):
        assert part in f.message, (f.cache_key, f.message)
    for key, value in (want.get("detail") or {}).items():
        assert f.detail.get(key) == value, (f.cache_key, key, f.detail.get(key))


def apply_fixes(dsn: str, config: Config, findings: list[Finding]) -> None:
    """Plan the migrations that fix ``findings`` as ``generate-migration --all`` does, and apply them."""
    from dbguard_pipeline.fixes.actions import build_context
    from dbguard_pipeline.fixes.ledger import apply_sql
    from dbguard_pipeline.fixes.select import plan_all

    # a fix case stands for a user whose dbguard.yaml names the tenant context: where no policy of the database
    # shows how the application sends its tenant, the generator refuses to guess it from defaults
    named = config.tenant.model_copy(update={"context": config.tenant.context})
    config = config.model_copy(update={"tenant": named})
    plan = plan_all(build_context(introspect(dsn), config, dsn), findings)
    assert plan.migrations and not plan.skipped, plan.skipped
    for m in plan.migrations:
        apply_sql(dsn, m.render_forward(), source=m.qualified)


def run_as_app(dsn: str, config: Config, statement: str) -> str | None:
    """The SQLSTATE ``statement`` raises as the app role (None when it succeeds), always rolled back."""
    import psycopg
    from psycopg import sql

    from dbguard_pipeline.pg.session import connect

    with connect(dsn) as conn:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SET LOCAL statement_timeout = '10s'")
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(config.tenant.app_role)))
                conn.execute(statement)
        except psycopg.Error as exc:
            return exc.sqlstate
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule_case(empty_dsn: str, case: Case) -> None:
    run_sql(empty_dsn, case.setup)
    config = Config.model_validate(case.config)
    findings = audit(empty_dsn, case, config)
    assert only_keys(findings) == set(case.expect)
    by_key = {f.cache_key: f for f in findings}
    for key, want in case.findings.items():
        check_finding(by_key[key], want)
    assert all(f.rule == case.rule and f.category == rules.REGISTRY[case.rule].category for f in findings)
    for statement, sqlstate in case.as_app:
        assert run_as_app(empty_dsn, config, statement) == sqlstate, statement
    if case.fix:
        apply_fixes(empty_dsn, config, findings)
        assert only_keys(audit(empty_dsn, case, config)) == set(), "findings left after the fix"
