"""Every SARIF dbguard writes is valid SARIF 2.1.0: checked against the official OASIS schema
(``data/sarif-schema-2.1.0.json``: sarif-schema-2.1.0.json of SARIF 2.1.0 errata01,
https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json, byte for byte),
which is what GitHub code scanning's upload enforces (uniqueItems on tags, required fields, formats)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from psycopg import sql

from dbguard_pipeline.audit import run_audit
from dbguard_pipeline.config import Config
from dbguard_pipeline.report import render, to_sarif
from dbguard_pipeline.report.sarif import RULES_DOC_URL
from dbguard_pipeline.rules import REGISTRY

from .conftest import run_sql
from .test_cli_foundation import dbguard

SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
RULES_MD = (Path(__file__).parent.parent / "docs" / "rules.md").read_text(encoding="utf-8")


def sarif_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft4Validator(SCHEMA, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc))


def test_the_schema_is_the_official_one_and_catches_what_github_rejects():
    assert SCHEMA["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")
    jsonschema.Draft4Validator.check_schema(SCHEMA)
    bad = {
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "x", "rules": [{"id": "r", "properties": {"tags": ["a", "a"]}}]}}}],
    }
    assert any("non-unique" in e for e in sarif_errors(bad))


def test_the_demo_report_is_valid_sarif(demo_dsn):
    doc = json.loads(render(run_audit(demo_dsn, Config()), "sarif"))
    assert sarif_errors(doc) == []
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    assert len(rules) == len(REGISTRY)
    for rule in rules:
        tags = rule["properties"]["tags"]
        assert len(tags) == len(set(tags)) and "security" in tags
        assert rule["helpUri"] == f"{RULES_DOC_URL}#{rule['id']}"
        assert f"\n## {rule['id']}\n" in RULES_MD  # the anchor the link points at exists


def test_rule_subsets_and_schema_only_audits_stay_valid(demo_dsn):
    for rules in (["weak_rls_policy"], ["security_definer_view", "function_search_path_mutable"]):
        result = run_audit(demo_dsn, Config(), rules=rules)
        assert sarif_errors(to_sarif(result)) == [], rules
    assert sarif_errors(to_sarif(run_audit(demo_dsn, Config(), with_metrics=False))) == []


def test_hostile_names_stay_valid_sarif(demo_dsn):
    run_sql(
        demo_dsn,
        sql.SQL("create schema {s}; create table {s}.{t} (id int primary key, tenant_id uuid);")
        .format(s=sql.Identifier('Sch"ema ü %/#'), t=sql.Identifier("a b\n\x1b[2J?#"))
        .as_string(None),
    )
    doc = to_sarif(run_audit(demo_dsn, Config()))
    assert sarif_errors(doc) == []
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in doc["runs"][0]["results"]]
    assert any("%0A" in u for u in uris)


@pytest.mark.parametrize("rules", [[], ["--rule", "weak_rls_policy"]])
def test_the_cli_sarif_file_is_valid(demo_dsn, tmp_path, rules):
    out = tmp_path / "dbguard.sarif"
    proc = dbguard(
        "validate", "--dsn", demo_dsn, "--format", "sarif", "--out", str(out), "--fail-on", "warning", *rules
    )
    assert proc.returncode == 1, proc.stderr
    assert sarif_errors(json.loads(out.read_text(encoding="utf-8"))) == []
