"""Issue #10, the static audit's side: partitions and inheritance children the application reaches are tables of
their own for row level security (while data metrics count a partitioned table's rows once), owners that can
connect make ``rls_not_forced`` fire without configuration, role memberships in the snapshot.

The reproductions (dbguard_tests/repros/audit-and-probe/, copies of ../shared/repros/audit-and-probe/) are loaded as they
are, with their YAML config; the rules' own families are in dbguard_tests/rules/cases/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from dbguard_pipeline import rules
from dbguard_pipeline.audit.run import collect_data, coverage_rows
from dbguard_pipeline.config import Config, load_config
from dbguard_pipeline.model.schema import Membership, Role
from dbguard_pipeline.model.snapshot_json import dump_snapshot, load_snapshot
from dbguard_pipeline.pg.catalog import QUERIES, introspect

from .conftest import run_sql

REPROS = Path(__file__).resolve().parent / "repros" / "audit-and-probe"
ROOT = Path(__file__).resolve().parents[1]


def load_repro(dsn: str, name: str) -> Config:
    """Load a reproduction (its CREATE ROLEs made idempotent: roles are shared by the test server's databases)."""
    text = (REPROS / f"{name}.sql").read_text()

    def once(m: re.Match[str]) -> str:
        return (f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{m.group(1)}') "
                f"THEN CREATE ROLE {m.group(1)}{m.group(2)}; END IF; END $$;")

    run_sql(dsn, re.sub(r"(?im)^create role (\w+)([^;]*);", once, text))
    return load_config(REPROS / f"{name}.yaml")


def keys(findings, rule: str) -> set[str]:
    return {f.cache_key for f in findings if f.rule == rule}


def test_partitions_repro_each_reachable_partition_is_reported_and_rows_count_once(empty_dsn):
    config = load_repro(empty_dsn, "partitions")
    snap = introspect(empty_dsn)
    metrics = collect_data(empty_dsn, snap, config)
    findings = rules.run_rules(snap, metrics, config)
    assert keys(findings, "rls_disabled_with_tenant_column") == {
        "rls_disabled_with_tenant_column:public.meter_readings_2026q1",
        "rls_disabled_with_tenant_column:public.meter_readings_2026q2"}
    # what the finding claims, as the app role with tenant A: B's rows through the partition
    with psycopg.connect(empty_dsn) as conn:
        conn.execute("SET ROLE meter_app")
        conn.execute("SELECT set_config('app.current_tenant_id', '11111111-1111-4111-8111-111111111111', false)")
        direct = conn.execute("SELECT count(*) FROM public.meter_readings_2026q1 "
                              "WHERE tenant_id <> '11111111-1111-4111-8111-111111111111'").fetchone()[0]
        parent = conn.execute("SELECT count(*) FROM public.meter_readings "
                              "WHERE tenant_id <> '11111111-1111-4111-8111-111111111111'").fetchone()[0]
    assert direct > 0 and parent == 0
    # every other rule sees the partitioned table once; its 66 rows are counted once, through the root
    assert not [f for f in findings if f.table.startswith("meter_readings_") and f.category != "rls"]
    assert [(c.table, c.rows) for c in coverage_rows(snap, metrics, config)] == [("meter_readings", 66)]


def test_two_level_partitions_and_inheritance_rows_are_counted_once(empty_dsn):
    run_sql(empty_dsn, """
        CREATE TABLE public.tenants (id uuid PRIMARY KEY);
        INSERT INTO public.tenants VALUES ('11111111-1111-4111-8111-111111111111');
        CREATE TABLE public.r (tenant_id uuid REFERENCES public.tenants, meter int NOT NULL, at date NOT NULL)
          PARTITION BY RANGE (at);
        CREATE TABLE public.r_2026 PARTITION OF public.r FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')
          PARTITION BY LIST (meter);
        CREATE TABLE public.r_2026_a PARTITION OF public.r_2026 FOR VALUES IN (1);
        CREATE TABLE public.r_2026_b PARTITION OF public.r_2026 DEFAULT;
        CREATE TABLE public.r_default PARTITION OF public.r DEFAULT;
        INSERT INTO public.r SELECT '11111111-1111-4111-8111-111111111111', m, d
          FROM generate_series(1, 3) m, (VALUES (date '2026-02-01'), (date '2030-01-01')) v(d);
        INSERT INTO public.r (meter, at) VALUES (1, '2026-03-01');
        CREATE TABLE public.logs (id int, tenant_id uuid);
        CREATE TABLE public.logs_old () INHERITS (public.logs);
        INSERT INTO public.logs VALUES (1, '11111111-1111-4111-8111-111111111111');
        INSERT INTO public.logs_old VALUES (2, NULL), (3, NULL);
    """)
    config = Config()
    snap = introspect(empty_dsn)
    assert snap.table("public.r_2026").kind == "partitioned" and snap.table("public.r_2026").parent == "public.r"
    assert snap.table("public.logs_old").parent == "public.logs"
    metrics = collect_data(empty_dsn, snap, config)
    assert "public.r_2026" not in metrics and "public.r_2026_a" not in metrics
    rows = {c.table: (c.rows, c.with_tenant) for c in coverage_rows(snap, metrics, config)}
    # 7 rows in r (one without tenant), 1 in logs itself and 2 in its child: nothing twice
    assert rows == {"r": (7, 6), "logs": (1, 1), "logs_old": (2, 0)}


def test_login_owner_repro_not_forced_by_default_and_fixed_by_force(empty_dsn):
    config = load_repro(empty_dsn, "login_owner")
    assert not config.tenant.app_role_owns_tables
    snap = introspect(empty_dsn)
    found = keys(rules.run_rules(snap, None, config), "rls_not_forced")
    assert found == {"rls_not_forced:public.stock_bins"}  # pick_lists is FORCEd; tenants too
    # what the finding claims: the owner's session sees both tenants' rows
    with psycopg.connect(empty_dsn) as conn:
        conn.execute("SET ROLE inventory_svc")
        assert conn.execute("SELECT count(DISTINCT tenant_id) FROM public.stock_bins").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM public.pick_lists").fetchone()[0] == 0  # forced: no context
    run_sql(empty_dsn, "ALTER TABLE public.stock_bins FORCE ROW LEVEL SECURITY")
    assert not keys(rules.run_rules(introspect(empty_dsn), None, config), "rls_not_forced")


def test_role_memberships_in_the_snapshot_round_trip_and_old_files_load(empty_dsn):
    run_sql(empty_dsn, """
        DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dbguard_s10_app') THEN
          CREATE ROLE dbguard_s10_app NOLOGIN; CREATE ROLE dbguard_s10_svc LOGIN;
          GRANT dbguard_s10_app TO dbguard_s10_svc;
          CREATE ROLE dbguard_s10_noinh LOGIN NOINHERIT; GRANT dbguard_s10_app TO dbguard_s10_noinh;
        END IF; END $$;
    """)
    assert len(QUERIES) == 10  # memberships are a column of the roles query, not a query of their own
    snap = introspect(empty_dsn)
    assert snap.role("dbguard_s10_svc").memberships == (Membership("dbguard_s10_app", True),)
    assert snap.role("dbguard_s10_noinh").memberships == (Membership("dbguard_s10_app", False),)
    assert snap.role("dbguard_s10_app").memberships == ()
    assert load_snapshot(dump_snapshot(snap)) == snap
    # a snapshot written before memberships existed still loads (no memberships)
    old = dump_snapshot(snap).replace('"memberships": [],', "")
    old = re.sub(r',\s*"memberships": \[[^\]]*\]', "", old)
    assert '"memberships"' not in old
    loaded = load_snapshot(old)
    assert loaded.role("dbguard_s10_svc") == Role("dbguard_s10_svc", False, False, True)


def test_app_role_owns_tables_is_accepted_with_a_deprecation_line(tmp_path):
    path = tmp_path / "dbguard.yaml"
    path.write_text("tenant:\n  app_role: app\n  app_role_owns_tables: true\n")
    code = ("import sys; from dbguard_pipeline.config import load_config; "
            f"print(load_config({str(path)!r}).tenant.app_role_owns_tables)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "True"
    assert "tenant.app_role_owns_tables is deprecated" in done.stderr and done.stderr.count("\n") == 1
    path.write_text("tenant:\n  app_role: app\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stderr == ""


@pytest.mark.parametrize("command", ["validate"])
def test_validate_cli_on_the_partitions_repro_fails_at_critical(empty_dsn, command, tmp_path):
    load_repro(empty_dsn, "partitions")
    done = subprocess.run([sys.executable, "-m", "dbguard_pipeline.cli", command, "--dsn", empty_dsn,
                           "--config", str(REPROS / "partitions.yaml")], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "public.meter_readings_2026q1" in done.stdout and "is a partition of public.meter_readings" in done.stdout
