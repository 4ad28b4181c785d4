"""The probe's own safety: it refuses roles that would make it meaningless, never consumes a sequence,
survives hostile identifiers, and never reports a table it could not probe as isolated."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import psycopg
import pytest
from psycopg import conninfo

from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.errors import DbguardError, NotFoundError
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.dsn import parse_dsn
from dbguard_pipeline.probe import ProbeRefused, probe

from .isolation_helpers import (
    APP,
    BYPASS,
    GUC_STYLES_SQL,
    H_CHILD,
    H_COL,
    H_KEY,
    H_RLS_OFF,
    H_SAFE,
    H_SCHEMA,
    H_TENANTS,
    LOGIN,
    ROLES_SQL,
    TENANTS_SQL,
    fingerprint,
    hostile_sql,
    scratch_database,
)

GUC_CONFIG = Config(tenant=TenantModel(app_role=APP))


@pytest.fixture(scope="module")
def styles_dsn(server_dsn):
    with scratch_database(server_dsn, GUC_STYLES_SQL) as dsn:
        yield dsn


@pytest.mark.security
def test_refuses_a_superuser_app_role(styles_dsn):
    superuser = parse_dsn(styles_dsn).get("user") or "postgres"
    with pytest.raises(ProbeRefused) as exc:
        probe(styles_dsn, Config(tenant=TenantModel(app_role=superuser)))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"refusing to probe as {superuser}: it is a superuser")
    assert exc.value.exit_code == 2


@pytest.mark.security
def test_refuses_a_bypassrls_app_role(styles_dsn):
    with pytest.raises(
        ProbeRefused,
        match=rf"^refusing to probe as {BYPASS}: it has BYPASSRLS, so row level security "
        "never applies to it",
    ):
        probe(styles_dsn, Config(tenant=TenantModel(app_role=BYPASS)))


@pytest.mark.security
def test_refuses_to_connect_as_a_role_that_cannot_see_every_tenant(styles_dsn):
    params = parse_dsn(styles_dsn)
    params["user"] = LOGIN
    with pytest.raises(ProbeRefused, match=f"connected as {LOGIN}, which is neither a superuser nor BYPASSRLS"):
        probe(conninfo.make_conninfo(**params), GUC_CONFIG)


def test_missing_app_role_and_unknown_tables_are_one_line_errors(styles_dsn):
    with pytest.raises(NotFoundError, match="the application role 'no_such_role' does not exist"):
        probe(styles_dsn, Config(tenant=TenantModel(app_role="no_such_role")))
    with pytest.raises(NotFoundError, match="^table not found in .*: public.nope$"):
        probe(styles_dsn, GUC_CONFIG, ["public.nope"])
    with pytest.raises(NotFoundError, match="public.tenants is the tenants table itself"):
        probe(styles_dsn, GUC_CONFIG, ["tenants"])
    with pytest.raises(DbguardError, match="tenant A and tenant B must differ"):
        probe(styles_dsn, GUC_CONFIG, ["rls_off"], tenants=("x", "x"))


@pytest.mark.security
def test_sequences_are_never_consumed_even_where_inserts_succeed(styles_dsn):
    before = fingerprint(styles_dsn)
    report = probe(styles_dsn, GUC_CONFIG, ["rls_off", "using_true", "safe_guc", "child_leak"])
    # bigserial and GENERATED ALWAYS identity tables, inserts that went through and ones RLS refused
    inserts = {r.table: r.isolated for r in report.results if r.probe == "insert_for_other_tenant"}
    assert inserts == {"rls_off": False, "using_true": False, "safe_guc": True, "child_leak": False}
    assert fingerprint(styles_dsn) == before
    assert any(k[0] == "sequence" for k in before)


@pytest.mark.security
def test_hostile_identifiers_everywhere(server_dsn):
    config = Config(
        tenant=TenantModel(
            column=H_COL, tenants_table=f"{H_SCHEMA}.{H_TENANTS}", tenants_key=H_KEY, guc="app.tenant", app_role=APP
        ),
        schemas=(H_SCHEMA,),
    )
    with scratch_database(server_dsn, hostile_sql()) as dsn:
        before = fingerprint(dsn)
        report = probe(dsn, config)
        assert fingerprint(dsn) == before
    cmds = ("select", "insert", "update", "delete")
    assert {report.outcome(f"{H_SCHEMA}.{H_RLS_OFF}", c)[0] for c in cmds} == {"leak"}
    assert {report.outcome(f"{H_SCHEMA}.{H_CHILD}", c)[0] for c in cmds} == {"leak"}
    assert {report.outcome(f"{H_SCHEMA}.{H_SAFE}", c)[0] for c in cmds} == {"isolated"}
    assert report.not_probed == []
    assert len(H_SAFE) == 63
    # names are shown, not obeyed: control characters escaped in text (text.escape_controls), the JUnit file
    # still parses
    text = report.to_text()
    assert "Kind'; --\\x0azwei" in text and "Kind'; --\nzwei" not in text
    suite = ET.fromstring(report.to_junit())
    assert f"test_isolation[{H_SCHEMA}.Kind'; --\\x0azwei-select]" in [tc.get("name") for tc in suite.iter("testcase")]
    assert json.loads(report.to_json())["results"][0]["schema"] == H_SCHEMA


@pytest.mark.security
def test_a_table_that_cannot_be_probed_is_never_reported_isolated(server_dsn):
    # no rows at all, and a NOT NULL column of a type the row builder cannot invent (point)
    ddl = (
        ROLES_SQL
        + TENANTS_SQL
        + f"""
    CREATE TABLE public.shapes (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants (id),
                                at point NOT NULL);
    GRANT SELECT, INSERT, UPDATE, DELETE ON public.shapes TO {APP};
    """
    )
    with scratch_database(server_dsn, ddl) as dsn:
        report = probe(dsn, GUC_CONFIG)
    assert report.results == []
    assert len(report.not_probed) == 9
    assert all(
        "cannot make a value of type point for NOT NULL column at of public.shapes" in n.reason
        for n in report.not_probed
    )
    assert {report.outcome("public.shapes", c)[0] for c in ("select", "insert", "update", "delete")} == {"not probed"}
    assert report.summary()["leaks"] == 0 and report.summary()["not_probed"] == 9


@pytest.mark.security
def test_a_locked_table_is_not_probed_and_the_others_are(styles_dsn):
    config = Config(tenant=TenantModel(app_role=APP), lock_timeout_ms=50)
    snapshot = introspect(styles_dsn)
    with psycopg.connect(styles_dsn) as holder:
        holder.execute("LOCK TABLE public.safe_guc IN ACCESS EXCLUSIVE MODE")
        report = probe(styles_dsn, config, ["safe_guc", "rls_off"], snapshot=snapshot)
        holder.rollback()
    assert not [r for r in report.results if r.table == "safe_guc"]
    assert {n.table for n in report.not_probed} == {"safe_guc"} and len(report.not_probed) == 9
    assert all("lock timeout" in n.reason for n in report.not_probed)
    assert report.outcome("public.rls_off", "select")[0] == "leak"


@pytest.mark.security
def test_writes_that_time_out_are_not_probed_while_reads_still_are(styles_dsn):
    config = Config(tenant=TenantModel(app_role=APP), lock_timeout_ms=50)
    with psycopg.connect(styles_dsn) as holder:
        holder.execute("LOCK TABLE public.using_true IN EXCLUSIVE MODE")  # reads pass, writes wait
        report = probe(styles_dsn, config, ["using_true"])
        holder.rollback()
    assert report.outcome("public.using_true", "select")[0] == "leak"
    for command in ("insert", "update", "delete"):
        verdict, results, not_probed = report.outcome("public.using_true", command)
        assert verdict == "not probed" and results == [], command
        assert all("lock timeout" in n.reason for n in not_probed)


def test_explicit_tenants_are_used_and_created_when_missing(styles_dsn):
    # tenant B does not exist yet: it is created inside each rolled-back transaction
    missing = "00000000-0000-0000-0000-0000000000ee"
    before = fingerprint(styles_dsn)
    report = probe(
        styles_dsn, GUC_CONFIG, ["rls_off", "safe_guc"], tenants=("00000000-0000-0000-0000-00000000000c", missing)
    )
    assert fingerprint(styles_dsn) == before
    assert report.tenant_context["tenant_b"] == missing
    assert report.not_probed == []
    assert {report.outcome("public.rls_off", c)[0] for c in ("select", "insert", "update", "delete")} == {"leak"}
    assert {report.outcome("public.safe_guc", c)[0] for c in ("select", "insert", "update", "delete")} == {"isolated"}
