"""dbguard analyze on a real PostgreSQL: the planted slow policies (bench/planted.py, test scale) are each named
with their measured overhead, fixes are proven on a scratch copy before they are proposed, nothing is suggested
for the table done right, the target is never written, and a BYPASSRLS or superuser app role is refused.
Timings are never asserted (bench/bench_analyze.py measures them); only what the plans show."""

from __future__ import annotations

import json
import re
import time

import dagster as dg
import psycopg
import pytest
import yaml
from psycopg import sql

from bench.planted import CONFIG, TEST, create_planted_database
from dbguard_pipeline.analyze import AnalyzeReport, Options, analyze
from dbguard_pipeline.cli import main
from dbguard_pipeline.config import Config
from dbguard_pipeline.defs.assets import schema_snapshot
from dbguard_pipeline.defs.performance import rls_overhead_below_threshold, rls_performance
from dbguard_pipeline.defs.resources import PostgresResource
from dbguard_pipeline.fixes.sandbox import signature
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.session import connect
from dbguard_tests.conftest import Databases, run_sql

PLANTED_TEMPLATE = "dbguard_test_planted_template"


@pytest.fixture(scope="module")
def planted_template(server_dsn) -> str:
    create_planted_database(server_dsn, PLANTED_TEMPLATE, TEST)
    return PLANTED_TEMPLATE


@pytest.fixture
def planted_dsn(databases, planted_template) -> str:
    return databases.create(template=planted_template)


@pytest.fixture(scope="module")
def config() -> Config:
    return Config.model_validate(CONFIG)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("analyze") / "dbguard.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def report(server_dsn, planted_template, config) -> AnalyzeReport:
    """One full analysis (fixes proven on a scratch copy) shared by the tests that only read it."""
    dbs = Databases(server_dsn)
    try:
        yield analyze(dbs.create(template=planted_template), config)
    finally:
        dbs.drop_all()


def _table(report: AnalyzeReport, name: str):
    (t,) = [t for t in report.tables if t.table == name]
    return t


def _kinds(report: AnalyzeReport, name: str) -> set[str]:
    return {c.kind for c in _table(report, name).causes}


def test_every_planted_cause_is_named_with_its_overhead(report):
    orders = _table(report, "public.orders")
    assert orders.status == "measured" and orders.overhead >= 2
    (jwt,) = [c for c in orders.causes if c.kind == "per_row_call"]
    assert jwt.message.startswith("auth.jwt() evaluated per row") and "not wrapped in (select ...)" in jwt.message
    invoices = _table(report, "public.invoices")
    assert any(c.kind == "per_row_call" and c.message.startswith("current_setting()") for c in invoices.causes)
    projects = _table(report, "public.projects")
    (member,) = [c for c in projects.causes if c.kind == "membership_without_index"]
    assert "public.memberships" in member.message and "(user_id, tenant_id)" in member.message
    assert member.fix.relation == "public.memberships" and member.fix.columns == ("user_id", "tenant_id")
    assert "subquery_per_row" in _kinds(report, "public.projects")
    events = _table(report, "public.events")
    assert {"missing_tenant_index", "volatile_function"} <= _kinds(report, "public.events")
    (scan,) = [c for c in events.causes if c.kind == "missing_tenant_index"]
    assert "no index leads with tenant_id" in scan.message and scan.fix.columns == ("tenant_id",)
    assert "public.current_tenant_id() is VOLATILE" in " ".join(c.message for c in events.causes)
    for t in (orders, invoices, projects, events):
        assert t.isolated and t.overhead >= 2, t.table
        assert {s.name for s in t.statements} == {"count", "page", "lookup"}
        assert all(s.app.ok and s.owner.ok and len(s.app.runs) == 3 for s in t.statements)
    # the headline names the overhead, both totals and the first cause
    from dbguard_pipeline.analyze.render import headline

    assert headline(orders).startswith(f"RLS costs {orders.overhead:,.1f}x on public.orders (")
    assert headline(orders).endswith(": " + orders.causes[0].message)


def test_fixes_are_proven_on_a_scratch_copy_before_they_are_proposed(report):
    proposed = {(s.action, s.relation, s.columns): s for t in report.tables for s in t.proposed}
    assert ("optimize-policy", "public.orders", ()) in proposed
    assert ("optimize-policy", "public.invoices", ()) in proposed
    assert ("optimize-policy", "public.events", ()) in proposed
    assert ("add-composite-index", "public.events", ("tenant_id",)) in proposed
    for s in proposed.values():
        assert s.speedup >= 1.5 and s.ms_after < s.ms_before, s.title
        assert s.rows_unchanged is True and s.rollback_verified is True, s.title
        assert s.lint == [], (s.title, s.lint)
    orders = proposed[("optimize-policy", "public.orders", ())].migration
    forward = orders.render_forward()
    assert 'ALTER POLICY "orders_tenant" ON "public"."orders"' in forward
    assert "(SELECT CAST(auth.jwt() ->> CAST('tenant_id' AS text) AS uuid))" in forward
    assert "USING ((tenant_id = ((auth.jwt() ->> 'tenant_id'::text))::uuid))" in orders.render_rollback()
    events = proposed[("optimize-policy", "public.events", ())].migration.render_forward()
    assert 'ALTER FUNCTION "public"."current_tenant_id"() STABLE SET search_path' in events
    index = proposed[("add-composite-index", "public.events", ("tenant_id",))].migration
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS" in index.render_forward()
    assert "DROP INDEX CONCURRENTLY IF EXISTS" in index.render_rollback()
    assert report.proof["method"] == "template"


def test_nothing_is_suggested_for_the_table_done_right(report):
    customers = _table(report, "public.customers")
    assert customers.status == "measured" and customers.isolated
    assert customers.causes == [] and customers.suggestions == []


def test_json_interface_and_migration_files_from_the_cli(planted_dsn, config_file, tmp_path, capsys):
    out = tmp_path / "migrations"
    code = main(
        [
            "analyze",
            "--dsn",
            planted_dsn,
            "--config",
            config_file,
            "--format",
            "json",
            "--table",
            "orders",
            "customers",
            "--migrations-dir",
            str(out),
            "--timestamp",
            "20260101000000",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    tables = {t["table"]: t for t in doc["tables"]}
    assert list(tables) == ["public.orders", "public.customers"]  # in the order asked for
    for t in doc["tables"]:
        assert t["status"] == "measured" and isinstance(t["overhead"], float)
        assert set(t["ms"]) == {"app", "owner"}
        for st in t["statements"]:
            assert isinstance(st["ms"]["app"], float) and isinstance(st["ms"]["owner"], float)
            assert isinstance(st["overhead"], float) and st["sql"]["owner"].count("tenant_id") == 1
    orders = tables["public.orders"]
    assert orders["causes"][0]["kind"] == "per_row_call"
    (sugg,) = orders["suggestions"]
    assert sugg["action"] == "optimize-policy" and sugg["status"] == "proposed" and sugg["speedup"] >= 1.5
    assert "ALTER POLICY" in sugg["migration"]["forward"] and "ALTER POLICY" in sugg["migration"]["rollback"]
    assert tables["public.customers"]["suggestions"] == [] and tables["public.customers"]["causes"] == []
    assert doc["pg_stat_statements"]["available"] in (True, False)
    assert sorted(p.name for p in out.iterdir()) == [
        "20260101000000_optimize_policy_orders.sql",
        "20260101000000_optimize_policy_orders_rollback.sql",
    ]


def _state(dsn: str) -> dict:
    """Everything a write or DDL would change: table contents, write counters, the catalog."""
    with connect(dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "select format('%I.%I', schemaname, relname) from pg_stat_user_tables order by 1"
            ).fetchall()
        ]
        contents = {
            t: conn.execute(
                sql.SQL("select md5(coalesce(string_agg(x::text, ',' order by x::text), '')) from {} x").format(
                    sql.SQL(t)
                )
            ).fetchone()[0]
            for t in tables
        }
        counters = conn.execute(
            "select format('%I.%I', schemaname, relname), n_tup_ins, n_tup_upd, n_tup_del,"
            " n_tup_hot_upd from pg_stat_user_tables order by 1"
        ).fetchall()
        classes = conn.execute("select oid, relname, relfilenode from pg_class order by oid").fetchall()
        procs = conn.execute("select oid, provolatile, proconfig from pg_proc order by oid").fetchall()
    return {
        "contents": contents,
        "counters": counters,
        "classes": classes,
        "procs": procs,
        "schema": signature(introspect(dsn)),
    }


def _reads(dsn: str) -> int:
    with connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "select sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)) from pg_stat_user_tables"
            " where relname = 'orders'"
        ).fetchone()[0]


@pytest.mark.security
def test_the_target_is_never_written(planted_dsn, server_dsn, config):
    before, reads = _state(planted_dsn), _reads(planted_dsn)
    report = analyze(planted_dsn, config, ["orders", "events", "projects"])
    assert any(t.proposed for t in report.tables)  # fixes were applied and measured, on the copy only
    deadline = time.monotonic() + 10  # statistics reach the view when the backends flush them (at the latest on exit)
    while _reads(planted_dsn) == reads and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _reads(planted_dsn) > reads  # the reads are counted, so writes would be too
    after = _state(planted_dsn)
    for key in ("contents", "counters", "classes", "procs", "schema"):
        assert after[key] == before[key], key
    with connect(server_dsn, autocommit=True) as conn:
        assert (
            conn.execute("select count(*) from pg_database where datname like 'dbguard_sandbox_%'").fetchone()[0] == 0
        )


@pytest.mark.security
@pytest.mark.parametrize(("role", "why"), [("service_role", "it has BYPASSRLS"), ("postgres", "it is a superuser")])
def test_refuses_to_measure_as_a_role_rls_never_applies_to(planted_dsn, tmp_path, capsys, role, why):
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text(yaml.safe_dump({"tenant": {**CONFIG["tenant"], "app_role": role}}), encoding="utf-8")
    code = main(["analyze", "--dsn", planted_dsn, "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"dbguard analyze: error: refusing to measure row level security as {role}: {why}")
    assert err.count("\n") == 1


def test_pg_stat_statements_top_statements_or_its_absence(planted_dsn, config):
    try:
        run_sql(planted_dsn, "create extension if not exists pg_stat_statements")
        run_sql(planted_dsn, "select count(*) from pg_stat_statements")
    except psycopg.Error:
        report = analyze(planted_dsn, config, ["orders"], options=Options(prove=False))
        assert report.stat_statements.available is False
        assert "pg_stat_statements" in report.stat_statements.reason
        return
    claims = json.dumps({"role": "authenticated", "tenant_id": "0ec75ff4-d279-61c9-a231-5e49a591d10e"})
    with psycopg.connect(planted_dsn) as conn:  # the application at work
        conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        conn.execute("set local role authenticated")
        for i in range(20):
            conn.execute(f"select * from public.orders where id = {i + 1}").fetchall()
            conn.execute("select count(*) from public.orders where amount > 5").fetchall()
    report = analyze(planted_dsn, config, ["orders"], options=Options(prove=False))
    ps = report.stat_statements
    assert ps.available, ps.reason
    modes = {e.mode for e in ps.statements if e.tables == ["public.orders"]}
    assert modes == {"generic plan"}  # pg_stat_statements keeps $1 for the constants
    assert all(e.plan and e.error is None for e in ps.statements), [e.error for e in ps.statements]


def test_the_demo_database_guc_context(demo_dsn):
    report = analyze(demo_dsn, Config(), options=Options(prove=False, runs=1))
    garages = _table(report, "public.garages")
    assert garages.status == "skipped" and "row level security is not enabled" in garages.reason
    vision = _table(report, "public.vision_accuracy")
    assert vision.status == "measured" and vision.isolated and vision.causes == []
    vehicles = _table(report, "public.vehicles")  # USING (true): the app role reads every tenant's rows
    assert not vehicles.isolated and "other tenants' rows" in vehicles.notes[0]
    assert report.context == {"mechanism": "guc", "setting": "app.current_tenant_id", "role": "authenticated"}


@pytest.mark.integration
def test_rls_performance_asset_plots_the_overhead_and_warns(planted_dsn, config_file):
    result = dg.materialize(
        [schema_snapshot, rls_performance, rls_overhead_below_threshold],
        resources={"database": PostgresResource(dsn=planted_dsn, config_path=config_file)},
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("rls_performance")
    md = mat.metadata
    assert isinstance(md["max_overhead"].value, float) and md["max_overhead"].value >= 10
    records = {r.data["table"]: r.data for r in md["overhead"].records}
    assert records["public.events"]["overhead"] >= 10 and "volatile_function" in records["public.events"]["causes"]
    assert records["public.customers"]["causes"] == ""
    assert "| public.events |" in md["report"].value
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "rls_overhead_below_threshold" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "public.events" in check.metadata["slow_tables"].value


# --------------------------------------------------------------------------- generate-migration optimize-policy
def _as_app(dsn: str, table: str, tenant: str, user: str, other: str) -> tuple[str, bool]:
    """As the app role with tenant A's JWT: a digest of the rows it sees, and whether it may insert a row of
    tenant B (rolled back)."""
    claims = json.dumps({"tenant_id": tenant, "sub": user, "role": "authenticated"})
    rel = sql.Identifier(*table.split("."))
    with connect(dsn, autocommit=True) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("set local role authenticated")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
            seen = conn.execute(
                sql.SQL("select md5(coalesce(string_agg(id::text, ',' order by id), '')) from {}").format(rel)
            ).fetchone()[0]
        cols = {"public.orders": "amount, created_at", "public.invoices": "total, issued_on"}
        values = {"public.orders": "1, now()", "public.invoices": "1, current_date"}
        wrote = False
        if table in cols:
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute("set local role authenticated")
                    conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
                    conn.execute(
                        sql.SQL("insert into {} (id, tenant_id, {}) values (-1, %s, {})").format(
                            rel, sql.SQL(cols[table]), sql.SQL(values[table])
                        ),
                        (other,),
                    )
                    wrote = True
            except psycopg.errors.InsufficientPrivilege:
                wrote = False
    return seen, wrote


@pytest.mark.integration
@pytest.mark.parametrize("table", ["orders", "invoices", "events", "projects"])
def test_optimize_policy_migration_applies_rolls_back_and_keeps_the_meaning(
    table, planted_dsn, config_file, tmp_path, capsys
):
    from dbguard_pipeline.fixes.ledger import Runner

    qualified = f"public.{table}"
    with connect(planted_dsn, autocommit=True) as conn:
        tenant, user = conn.execute(
            "select tenant_id::text, user_id::text from public.memberships order by id limit 1"
        ).fetchone()
        other = conn.execute(
            "select id::text from public.tenants where id <> %s order by id limit 1", (tenant,)
        ).fetchone()[0]
    before_rows = _as_app(planted_dsn, qualified, tenant, user, other)
    assert before_rows[0] != _as_app(planted_dsn, qualified, other, user, tenant)[0] or table == "projects"
    before = signature(introspect(planted_dsn))
    out = tmp_path / "migrations"
    code = main(
        [
            "generate-migration",
            "optimize-policy",
            table,
            "--dsn",
            planted_dsn,
            "--config",
            config_file,
            "--out-dir",
            str(out),
            "--timestamp",
            "20260101000000",
            "--test",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "0 violations" in printed.out or "passed" in printed.out, printed.out
    assert f"optimize-policy {qualified}: applied, finding gone, rolled back, snapshot identical" in printed.out
    name = f"20260101000000_optimize_policy_{table}"
    forward = (out / f"{name}.sql").read_text()
    assert "ALTER POLICY" in forward and "DROP POLICY" not in forward and "CREATE POLICY" not in forward
    runner = Runner(planted_dsn, out)
    assert [r.name for r in runner.up()] == [name]
    after = introspect(planted_dsn)
    (t,) = [x for x in after.tables if x.qualified == qualified]
    wrapped = re.compile(r"\(\s*SELECT|= ANY \(", re.I)
    assert all(wrapped.search(p.using or "") for p in t.policies), [p.using for p in t.policies]
    # the same rows as the app role, the same write refused: the meaning did not change
    assert _as_app(planted_dsn, qualified, tenant, user, other) == before_rows
    assert before_rows[1] is False
    # nothing left to optimize once applied
    code = main(
        [
            "generate-migration",
            "optimize-policy",
            table,
            "--dsn",
            planted_dsn,
            "--config",
            config_file,
            "--out-dir",
            str(tmp_path / "again"),
        ]
    )
    assert code == 0 and "nothing to fix" in capsys.readouterr().out
    runner.rollback(name)
    assert signature(introspect(planted_dsn)) == before
    assert _as_app(planted_dsn, qualified, tenant, user, other) == before_rows


@pytest.mark.integration
def test_optimize_policy_refuses_a_table_already_fast(planted_dsn, config_file, tmp_path, capsys):
    code = main(
        [
            "generate-migration",
            "optimize-policy",
            "customers",
            "--dsn",
            planted_dsn,
            "--config",
            config_file,
            "--out-dir",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("nothing to fix: the policies of public.customers already evaluate")
    assert not list(tmp_path.iterdir())
    argv = ["generate-migration", "optimize-policy", "customers", "--analyze", "--dsn", planted_dsn]
    assert main(argv) == 2
    assert "--analyze goes with --all" in capsys.readouterr().err


@pytest.mark.integration
def test_generate_all_adds_optimize_policy_only_where_analyze_proved_it(planted_dsn, config_file, tmp_path, capsys):
    argv = [
        "generate-migration",
        "--all",
        "--dsn",
        planted_dsn,
        "--config",
        config_file,
        "--timestamp",
        "20260101000000",
    ]
    assert main([*argv, "--out-dir", str(tmp_path / "plain"), "--no-test"]) == 0
    plain = capsys.readouterr().out
    assert "optimize_policy" not in plain and "optimize-policy" not in plain
    code = main([*argv, "--analyze", "--out-dir", str(tmp_path / "m"), "--no-test"])
    out = capsys.readouterr().out
    assert code == 0, out
    files = {p.stem.split("_", 1)[1]: p for p in (tmp_path / "m").glob("*.sql") if not p.stem.endswith("_rollback")}
    optimized = {k.removeprefix("optimize_policy_") for k in files if k.startswith("optimize_policy_")}
    assert "events" in optimized, out  # proven: the VOLATILE helper made STABLE, the call wrapped
    for table in optimized:
        text = files[f"optimize_policy_{table}"].read_text()
        assert re.search(r"dbguard analyze measured it \d+\.\dx faster on a scratch copy", text), text[:600]
        # no other migration of the run rewrites that table's policies (an index may come with it)
        assert not any(
            k.endswith(f"_{table}") for k in files if not k.startswith(("optimize_policy_", "add_composite"))
        )
    # where fix-rls-policy (or add-tenant-isolation) changes the table in this run, optimize-policy waits
    for table in ("orders", "invoices"):
        assert f"fix_rls_policy_{table}" in files and table not in optimized
        assert f"skip  optimize-policy public.{table}: fix-rls-policy changes the table in this run" in out
    assert "customer_contacts" not in optimized
    # the files pass the same lint as every other migration
    assert "squawk" in out and " 0 violations" in out
