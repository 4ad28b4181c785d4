"""Reports from a real audit: the json shape, SARIF structure, JUnit that CI parses, the text report."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from urllib.parse import unquote

import pytest
from psycopg import sql

from dbguard_pipeline.audit import run_audit
from dbguard_pipeline.config import Config
from dbguard_pipeline.report import render, to_sarif

from .conftest import run_sql

HOSTILE_SCHEMA = 'Sch"ema ü'
HOSTILE_TABLE = 'a"b; drop table x\n✓ fake line\x1b[2J'

# Planted data problems on top of the demo: an orphan through the tenant column of
# vehicle_spec_enhancements (no foreign key), a conversation pointing at another tenant's vehicle, a table in
# a hostile schema with rows that have no tenant.
PLANT = sql.SQL("""
insert into public.vehicle_spec_enhancements (id, tenant_id, vehicle_id, spec, source)
values (md5('spec:orphan')::uuid, md5('tenant:404')::uuid, md5('vehicle:1')::uuid, '{{}}', 'manual');
update public.conversations set tenant_id = md5('tenant:3')::uuid where id = md5('conversation:1')::uuid;
create schema {s};
create table {s}.{t} (id int primary key, tenant_id uuid references public.tenants(id));
insert into {s}.{t} values (1, md5('tenant:1')::uuid), (2, null);
""").format(s=sql.Identifier(HOSTILE_SCHEMA), t=sql.Identifier(HOSTILE_TABLE))

FINDING_KEYS = {"rule", "severity", "category", "schema", "table", "object", "message", "cache_key", "remediation"}


@pytest.fixture
def planted(demo_dsn):
    run_sql(demo_dsn, PLANT.as_string(None))
    return demo_dsn


@pytest.fixture
def result(planted):
    config = Config(ignore=("cross_tenant_reference:public.conversations:conversations_vehicle_id_fkey",))
    return run_audit(planted, config)


def test_json_has_the_documented_shape(result):
    data = json.loads(render(result, "json"))
    assert {"database", "generated_at", "summary", "findings", "coverage"} <= set(data)
    assert data["database"] == result.snapshot.database
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", data["generated_at"])
    assert {"critical", "warning", "info"} <= set(data["summary"])
    for f in data["findings"] + data["ignored"]:
        assert set(f) == FINDING_KEYS
        assert f["severity"] in ("critical", "warning", "info")
        assert f["cache_key"].startswith(f"{f['rule']}:{f['schema']}.{f['table']}")
    for sev in ("critical", "warning", "info"):
        assert data["summary"][sev] == sum(1 for f in data["findings"] if f["severity"] == sev)
    keys = {f["cache_key"] for f in data["findings"]}
    assert "orphaned_rows:public.vehicle_spec_enhancements:tenant_id" in keys
    assert f"tenant_coverage:{HOSTILE_SCHEMA}.{HOSTILE_TABLE}:tenant_id" in keys  # raw names, JSON-escaped
    # ignored: counted and listed, not silently dropped
    assert data["summary"]["ignored"] == 1
    assert [f["cache_key"] for f in data["ignored"]] == [
        "cross_tenant_reference:public.conversations:conversations_vehicle_id_fkey"
    ]
    cov = {(c["schema"], c["table"]): c for c in data["coverage"]}
    assert {"schema", "table", "rows", "with_tenant", "percent"} <= set(cov[("public", "vehicles")])
    assert (cov[("public", "vehicles")]["rows"], cov[("public", "vehicles")]["percent"]) == (22, 100.0)
    hostile = cov[(HOSTILE_SCHEMA, HOSTILE_TABLE)]
    assert (hostile["rows"], hostile["with_tenant"], hostile["percent"]) == (2, 1, 50.0)


def test_sarif_is_what_github_code_scanning_reads(result):
    doc = json.loads(render(result, "sarif"))
    assert doc["version"] == "2.1.0" and doc["$schema"].endswith("sarif-2.1.0.json")
    assert len(doc["runs"]) == 1
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "dbguard" and driver["version"]
    rule_ids = [r["id"] for r in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids)) and {"orphaned_rows", "tenant_coverage"} <= set(rule_ids)
    for r in driver["rules"]:
        assert r["shortDescription"]["text"] and r["fullDescription"]["text"] and r["help"]["text"]
        assert r["defaultConfiguration"]["level"] in ("error", "warning", "note")
        assert float(r["properties"]["security-severity"]) > 0
    level = {"critical": "error", "warning": "warning", "info": "note"}
    assert len(run["results"]) == len(result.findings)
    for res, f in zip(run["results"], result.findings, strict=True):
        assert res["ruleId"] == f.rule and driver["rules"][res["ruleIndex"]]["id"] == f.rule
        assert res["level"] == level[f.severity.value]
        assert res["message"]["text"].startswith(f.message.split()[0])
        loc = res["locations"][0]
        assert loc["logicalLocations"][0]["fullyQualifiedName"] == f"{f.schema}.{f.table}"
        uri = loc["physicalLocation"]["artifactLocation"]["uri"]
        assert not re.search(r"[\s\"\x00-\x1f]", uri)  # a valid URI reference, whatever the table name
        assert unquote(uri).endswith(f"/{f.schema}/{f.table}")
        assert loc["physicalLocation"]["region"]["startLine"] >= 1
        assert res["partialFingerprints"]
    assert run["invocations"][0]["executionSuccessful"] is True


@pytest.mark.integration
def test_junit_parses_and_fails_exactly_the_findings_at_or_above_fail_on(result):
    for fail_on in ("critical", "warning"):
        root = ET.fromstring(render(result, "junit", fail_on=fail_on).encode())
        assert root.tag == "testsuites"
        cases = root.findall("./testsuite/testcase")
        assert int(root.get("tests")) == len(cases)
        failures = [c for c in cases if c.find("failure") is not None]
        assert int(root.get("failures")) == len(failures)
        rank = {"critical": 3, "warning": 2, "info": 1}
        expected = {
            (f"dbguard.{f.rule}", f"{f.schema}.{f.table}".replace("\x1b", "\ufffd"))
            for f in result.findings
            if rank[f.severity.value] >= rank[fail_on]
        }
        assert {(c.get("classname"), c.get("name")) for c in failures} == expected
        skipped = [c for c in cases if c.find("skipped") is not None]
        assert [(c.get("classname"), c.get("name")) for c in skipped] == [
            ("dbguard.cross_tenant_reference", "public.conversations")
        ]
        for suite in root.findall("testsuite"):
            assert int(suite.get("tests")) == len(suite.findall("testcase"))
    # one testcase per rule x audited table: the hostile name comes through intact (control characters
    # are not legal XML: they are replaced, never written raw)
    names = {c.get("name") for c in cases}
    assert f'{HOSTILE_SCHEMA}.a"b; drop table x\n✓ fake line\ufffd[2J' in names


@pytest.mark.security
def test_text_report_sections_symbols_and_count_line(result):
    text = render(result, "text", color=False)
    assert "\x1b" not in text  # plain: no colour codes, and the hostile name's escape sequence is neutralised
    order = [text.index(h) for h in ("Tenant data coverage:", "RLS status:", "Foreign-key integrity:")]
    assert order == sorted(order)
    assert "  ✓ public.vehicles: 100.0% complete (22/22)" in text
    assert "✗ public.vehicle_spec_enhancements: 1 rows reference a missing row" in text
    # a hostile table name cannot forge a line of its own
    assert not any(line.startswith("✓ fake line") for line in text.splitlines())
    assert '"a""b; drop table x\\x0a✓ fake line\\x1b[2J"' in text
    s = result.summary()
    last = text.strip().splitlines()[-1]
    assert f"{s['critical']} critical" in last and f"{s['warning']} warning" in last and "1 ignored" in last
    assert "Ignored by config (1):" in text


def test_text_report_is_coloured_on_a_terminal(result):
    coloured = render(result, "text", color=True)
    assert "\x1b[" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == render(result, "text", color=False)


def test_not_measured_tables_appear_in_every_format(planted):
    config = Config(required_columns={"public.vehicles": ("no_such_column",)})
    result = run_audit(planted, config)
    assert ("public.vehicles", "required column 'no_such_column' does not exist") in result.not_measured
    assert "Not measured" in render(result, "text", color=False)
    assert json.loads(render(result, "json"))["not_measured"] == [
        {"table": "public.vehicles", "reason": "required column 'no_such_column' does not exist"}
    ]
    notes = to_sarif(result)["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert any("public.vehicles" in n["message"]["text"] for n in notes)
    root = ET.fromstring(render(result, "junit").encode())
    errors = root.findall("./testsuite[@name='dbguard.data_metrics']/testcase[@name='public.vehicles']/error")
    assert len(errors) == 1 and int(root.get("errors")) >= 1
