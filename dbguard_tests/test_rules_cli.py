"""`dbguard rules`, per-rule severity overrides (`severity:`) and exclusions (`exclude_rules:`, `--exclude-rule`):
what the listing says, and that the audit's findings, exit codes and SARIF agree with the config."""

from __future__ import annotations

import json

from dbguard_pipeline.rules import REGISTRY

from .conftest import run_sql
from .test_cli_foundation import assert_one_line_error, dbguard

PROBLEM = """
create table tenants (id uuid primary key);
insert into tenants values (md5('t1')::uuid);
create table notes (id int primary key, tenant_id uuid references tenants(id), title text);
insert into notes values (1, md5('t1')::uuid, 'a'), (2, null, null);
"""


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "dbguard.yaml"
    path.write_text(text)
    return str(path)


def test_rules_lists_every_rule_with_severity_category_and_fix():
    proc = dbguard("rules")
    assert proc.returncode == 0, proc.stderr
    for spec in REGISTRY.values():
        line = next(ln for ln in proc.stdout.splitlines() if ln.split()[:1] == [spec.id])
        assert spec.severity.value in line and spec.category in line and spec.title in line
        assert (spec.fix_action or "-") in line.split()
    as_json = json.loads(dbguard("rules", "--format", "json").stdout)["rules"]
    assert {r["id"] for r in as_json} == set(REGISTRY)
    by_id = {r["id"]: r for r in as_json}
    assert by_id["weak_rls_policy"]["fixable"] and by_id["weak_rls_policy"]["fix_action"] == "fix-rls-policy"
    assert not by_id["rls_enabled_no_policy"]["fixable"]


def test_rules_shows_the_config_overrides_and_exclusions(tmp_path):
    cfg = _config(tmp_path, "severity:\n  weak_rls_policy: critical\nexclude_rules: [rls_enabled_no_policy]\n")
    rows = {r["id"]: r for r in json.loads(dbguard("rules", "--config", cfg, "--format", "json").stdout)["rules"]}
    assert rows["weak_rls_policy"]["severity"] == "critical"
    assert rows["weak_rls_policy"]["default_severity"] == "warning"
    assert rows["rls_enabled_no_policy"]["excluded"]
    text = dbguard("rules", "--config", cfg).stdout
    assert "critical*" in next(ln for ln in text.splitlines() if ln.startswith("weak_rls_policy "))
    assert "(excluded)" in next(ln for ln in text.splitlines() if ln.startswith("rls_enabled_no_policy "))


def test_severity_override_changes_findings_sarif_and_exit_code(empty_dsn, tmp_path):
    run_sql(empty_dsn, PROBLEM)
    base = ("validate", "--dsn", empty_dsn, "--rule", "tenant_coverage")
    assert dbguard(*base).returncode == 1  # tenant_coverage is critical by default
    cfg = _config(tmp_path, "severity:\n  tenant_coverage: warning\n")
    report = dbguard(*base, "--config", cfg, "--format", "json")
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout)["summary"]
    assert (summary["critical"], summary["warning"]) == (0, 1)
    assert dbguard(*base, "--config", cfg, "--fail-on", "warning").returncode == 1
    sarif = json.loads(dbguard(*base, "--config", cfg, "--format", "sarif").stdout)
    assert [r["level"] for r in sarif["runs"][0]["results"]] == ["warning"]
    up = _config(tmp_path, "severity:\n  orphaned_rows: critical\n  tenant_coverage: info\n")
    assert dbguard(*base, "--config", up, "--fail-on", "warning").returncode == 0


def test_excluded_rules_do_not_run(empty_dsn, tmp_path):
    run_sql(empty_dsn, PROBLEM)
    base = ("validate", "--dsn", empty_dsn, "--format", "json")
    full = json.loads(dbguard(*base).stdout)
    assert "tenant_coverage" in {f["rule"] for f in full["findings"]}
    for extra in (
        ("--exclude-rule", "tenant_coverage"),
        ("--config", _config(tmp_path, "exclude_rules: [tenant_coverage]\n")),
    ):
        out = json.loads(dbguard(*base, *extra).stdout)
        assert "tenant_coverage" not in {f["rule"] for f in out["findings"]}
        assert "tenant_coverage" not in out["rules"]
        assert {f["rule"] for f in out["findings"]} == {f["rule"] for f in full["findings"]} - {"tenant_coverage"}
    only = dbguard("validate", "--dsn", empty_dsn, "--rule", "tenant_coverage", "--exclude-rule", "tenant_coverage")
    assert only.returncode == 0, only.stderr


def test_unknown_rule_ids_are_one_line_errors(empty_dsn, tmp_path):
    bad_severity = _config(tmp_path, "severity:\n  no_such_rule: warning\n")
    assert_one_line_error(dbguard("validate", "--dsn", empty_dsn, "--config", bad_severity), "no_such_rule", "severity")
    assert_one_line_error(dbguard("rules", "--config", bad_severity), "no_such_rule")
    bad_exclude = _config(tmp_path, "exclude_rules: [nope_rule]\n")
    assert_one_line_error(
        dbguard("validate", "--dsn", empty_dsn, "--config", bad_exclude), "nope_rule", "exclude_rules"
    )
    assert_one_line_error(dbguard("validate", "--dsn", empty_dsn, "--exclude-rule", "nope_rule"), "nope_rule")
    bad_level = _config(tmp_path, "severity:\n  weak_rls_policy: loud\n")
    assert_one_line_error(dbguard("rules", "--config", bad_level), "severity.weak_rls_policy")
