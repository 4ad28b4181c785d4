"""The CLI as a user runs it: the demo, introspect, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from psycopg import sql

from dbguard_pipeline.pg.dsn import parse_dsn, with_database
from dbguard_pipeline.pg.session import connect

from .conftest import SECRET, _as_user  # noqa: F401  (password_role is a conftest fixture)


def dbguard(*args, env=None, timeout=120):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DBGUARD_DATABASE_URL", None) if env is None or "DBGUARD_DATABASE_URL" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "dbguard_pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert SECRET not in proc.stderr + proc.stdout


def test_introspect_writes_snapshot_file(demo_dsn, tmp_path):
    out = tmp_path / "snap.json"
    proc = dbguard("introspect", "--dsn", demo_dsn, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["database"] == parse_dsn(demo_dsn)["dbname"]
    assert {t["name"] for t in data["tables"] if t["schema"] == "public"} >= {"garages", "vehicles"}
    assert "wrote" in proc.stderr


def test_introspect_reads_env_dsn_and_schema_filter(demo_dsn):
    proc = dbguard("introspect", "--schema", "auth", env={"DBGUARD_DATABASE_URL": demo_dsn})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schemas"] == ["auth"] and [t["name"] for t in data["tables"]] == ["users"]


def test_introspect_unknown_schema_is_an_error(demo_dsn):
    assert_one_line_error(dbguard("introspect", "--dsn", demo_dsn, "--schema", "nope"), "schema not found", "nope")


def test_demo_runs_twice_on_its_own_embedded_server(tmp_path):
    env = {"DBGUARD_HOME": str(tmp_path / "home")}
    first = dbguard("demo", env=env, timeout=300)
    assert first.returncode in (0, 1), first.stderr  # 1 = the audit found critical problems, as it should
    second = dbguard("demo", env=env, timeout=300)
    assert second.returncode == first.returncode, second.stderr
    assert "garages" in first.stdout and first.stdout == second.stdout
    assert (tmp_path / "home" / "pgdata" / "PG_VERSION").exists()
    # the server is stopped cleanly when the command exits
    assert not (tmp_path / "home" / "pgdata" / "postmaster.pid").exists()


def test_unreachable_host():
    proc = dbguard("introspect", "--dsn", f"postgresql://app:{SECRET}@127.0.0.1:1/prod")
    assert_one_line_error(proc, "cannot connect to app@127.0.0.1:1/prod")


def test_malformed_dsn_never_echoes_the_password():
    assert_one_line_error(dbguard("introspect", "--dsn", f"postgresql://app:{SECRET}@[oops/db"), "malformed")
    assert_one_line_error(dbguard("introspect", "--dsn", f"host=x password='{SECRET}"), "malformed")


def test_database_that_does_not_exist(server_dsn):
    proc = dbguard("introspect", "--dsn", with_database(server_dsn, "no_such_database"))
    assert_one_line_error(proc, "no_such_database", "does not exist")


def test_wrong_password(server_dsn, password_role):
    proc = dbguard("introspect", "--dsn", _as_user(server_dsn, password_role, SECRET + "x"))
    assert_one_line_error(proc, "wrong user name or password")
    assert (SECRET + "x") not in proc.stderr


def test_right_password_works_and_is_never_printed(server_dsn, password_role, demo_dsn):
    dsn = _as_user(server_dsn, password_role, SECRET, parse_dsn(demo_dsn)["dbname"])
    proc = dbguard("introspect", "--dsn", dsn)
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_no_right_to_connect(server_dsn, demo_dsn):
    dbname = parse_dsn(demo_dsn)["dbname"]
    with connect(server_dsn, autocommit=True) as conn:
        conn.execute("drop role if exists dbguard_no_connect")
        conn.execute("create role dbguard_no_connect login")
        conn.execute(sql.SQL("revoke connect on database {} from public").format(sql.Identifier(dbname)))
    proc = dbguard("introspect", "--dsn", _as_user(server_dsn, "dbguard_no_connect", None, dbname))
    assert_one_line_error(proc, "permission denied")


def test_usage_errors_exit_2():
    proc = dbguard("frobnicate")
    assert proc.returncode == 2 and "unknown command" in proc.stderr and "Traceback" not in proc.stderr
    proc = dbguard("introspect", "--no-such-flag")
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
