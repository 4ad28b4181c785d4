"""Great Expectations suites from the config, run with SQL push-down against a real PostgreSQL."""

from __future__ import annotations

import json

import pytest
from psycopg import sql

from dbguard_pipeline.audit import run_audit
from dbguard_pipeline.config import Config, Expectation
from dbguard_pipeline.errors import ConfigError
from dbguard_pipeline.pg.dsn import parse_dsn
from dbguard_pipeline.pg.expectations import _engine_args, run_expectations

from .conftest import SECRET, _as_user, run_sql
from .test_cli_foundation import dbguard  # noqa: F401


def exp(table, type_, severity="critical", **kwargs):
    return Expectation(table=table, type=type_, kwargs=kwargs, severity=severity)


@pytest.mark.integration
def test_failed_expectations_become_findings_with_the_configured_severity(demo_dsn):
    config = Config(
        expectations=(
            exp("public.vehicles", "ExpectColumnValuesToNotBeNull", column="garage_id"),  # holds
            exp(
                "public.vehicles",
                "expect_column_values_to_be_between",
                "warning",
                column="year",
                min_value=2015,
                max_value=2030,
            ),  # 9 of 22 vehicles are older
            exp("public.garages", "ExpectTableRowCountToBeBetween", "info", min_value=1, max_value=3),  # 6 garages
            exp("public.garages", "ExpectColumnValuesToBeUnique", column="name"),  # holds
        )
    )
    result = run_audit(demo_dsn, config, rules=["expectation_failed"])
    got = {f.cache_key: f for f in result.findings}
    assert set(got) == {
        "expectation_failed:public.vehicles:ExpectColumnValuesToBeBetween(year)",
        "expectation_failed:public.garages:ExpectTableRowCountToBeBetween",
    }
    between = got["expectation_failed:public.vehicles:ExpectColumnValuesToBeBetween(year)"]
    assert between.severity.value == "warning" and between.category == "expectations"
    assert "9 of 22 rows unexpected" in between.message
    rows = got["expectation_failed:public.garages:ExpectTableRowCountToBeBetween"]
    assert rows.severity.value == "info" and "observed 6" in rows.message
    assert result.not_measured == ()


def test_a_missing_table_or_column_is_not_measured_never_passed(demo_dsn):
    config = Config(
        expectations=(
            exp("public.nope", "ExpectTableRowCountToBeBetween", min_value=1),
            exp("public.garages", "ExpectColumnValuesToNotBeNull", column="no_such_column"),
        )
    )
    results = run_expectations(demo_dsn, config)
    assert [r.success for r in results] == [None, None]
    assert "does not exist" in results[0].error and "no_such_column" in results[1].error
    audit = run_audit(demo_dsn, config, rules=["expectation_failed"])
    assert audit.findings == () and {t for t, _ in audit.not_measured} == {"public.nope", "public.garages"}


def test_bad_expectation_type_or_kwargs_is_a_config_error(demo_dsn, tmp_path):
    with pytest.raises(ConfigError, match="unknown Great Expectations expectation type 'ExpectTheMoon'"):
        run_expectations(demo_dsn, Config(expectations=(exp("public.garages", "ExpectTheMoon"),)))
    with pytest.raises(ConfigError, match=r"expectations\[0\].*invalid kwargs"):
        run_expectations(
            demo_dsn, Config(expectations=(exp("public.garages", "ExpectColumnValuesToNotBeNull", colum="name"),))
        )
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text("expectations:\n  - {table: public.garages, type: ExpectTheMoon}\n")
    proc = dbguard("validate", "--dsn", demo_dsn, "--config", str(cfg), "--rule", "expectation_failed")
    assert proc.returncode == 2 and "ExpectTheMoon" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.security
def test_hostile_identifiers_reach_gx_quoted(empty_dsn):
    s, t, c = 'Sch"ema ü', 'a"b; drop table x', "Wert ✓"
    run_sql(
        empty_dsn,
        sql.SQL(
            "create schema {s}; create table {s}.{t} ({c} int); create table public.x (id int);"
            "insert into {s}.{t} values (1), (null), (3);"
        )
        .format(s=sql.Identifier(s), t=sql.Identifier(t), c=sql.Identifier(c))
        .as_string(None),
    )
    config = Config(expectations=(exp(f"{s}.{t}", "ExpectColumnValuesToNotBeNull", column=c),))
    (r,) = run_expectations(empty_dsn, config)
    assert r.error is None and r.success is False and r.observed["unexpected_count"] == 1
    assert r.table == f"{s}.{t}"
    run_sql(empty_dsn, "select 'public.x'::regclass")  # still there


@pytest.mark.security
def test_gx_connections_are_read_only_and_the_password_stays_out_of_gx(server_dsn, password_role, demo_dsn):  # noqa: F811
    dbname = parse_dsn(demo_dsn)["dbname"]
    run_sql(demo_dsn, f"grant select on public.garages to {password_role}")
    dsn = _as_user(server_dsn, password_role, SECRET, dbname)
    url, connect_args = _engine_args(dsn, Config())
    assert SECRET not in url  # the URL GX keeps (and may print) carries no password
    assert "default_transaction_read_only=on" in connect_args["options"]
    assert "row_security=off" in connect_args["options"]
    config = Config(expectations=(exp("public.garages", "ExpectTableRowCountToBeBetween", min_value=10),))
    (r,) = run_expectations(dsn, config)
    assert r.success is False and r.observed["observed_value"] == 6
    # an expectation that needs a write would fail: the session is read only
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args=connect_args)
    with engine.connect() as conn:
        assert conn.execute(text("show transaction_read_only")).scalar() == "on"
    engine.dispose()
    cfg_args = ("validate", "--dsn", _as_user(server_dsn, password_role, SECRET + "x", dbname))
    wrong = dbguard(*cfg_args)
    assert wrong.returncode == 2 and SECRET not in wrong.stderr + wrong.stdout


def test_great_expectations_is_imported_only_when_the_config_declares_expectations(demo_dsn, tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "dbguard.yaml"  # a type dbguard does not evaluate itself: Great Expectations runs it
    cfg.write_text(
        "expectations:\n  - {table: public.garages, type: ExpectColumnValueLengthsToBeBetween, "
        "kwargs: {column: name, min_value: 1}}\n"
    )
    code = (
        "import json, sys\n"
        "from dbguard_pipeline.cli import main\n"
        f"rc = main(['validate', '--dsn', {demo_dsn!r}, '--config', sys.argv[1], '--format', 'json',"
        f" '--out', {str(tmp_path / 'r.json')!r}, '--rule', 'expectation_failed'])\n"
        "print(json.dumps([rc, 'great_expectations' in sys.modules, 'pandas' in sys.modules]))\n"
    )
    with_gx = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, timeout=180)
    assert with_gx.returncode == 0, with_gx.stderr
    assert json.loads(with_gx.stdout.strip().splitlines()[-1])[:2] == [0, True]
    sql_only = tmp_path / "sql.yaml"  # one dbguard evaluates in SQL: Great Expectations is never imported
    sql_only.write_text(
        "expectations:\n  - {table: public.garages, type: ExpectTableRowCountToBeBetween, kwargs: {min_value: 1}}\n"
    )
    fast = subprocess.run([sys.executable, "-c", code, str(sql_only)], capture_output=True, text=True, timeout=180)
    assert json.loads(fast.stdout.strip().splitlines()[-1]) == [0, False, False], fast.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    without = subprocess.run([sys.executable, "-c", code, str(empty)], capture_output=True, text=True, timeout=180)
    assert json.loads(without.stdout.strip().splitlines()[-1]) == [0, False, False]
