"""The runner on bad inputs and awkward targets (issue #13, items 6-8): INVALID indexes after CONCURRENTLY,
line-ending-proof checksums and old ledgers, read-only targets, roles without CREATE, unreadable or non-UTF-8
files and folders, absent and empty folders, a CREATEDB role that does not own the target."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dbguard_pipeline.cli import main
from dbguard_pipeline.errors import MigrationError
from dbguard_pipeline.fixes.ledger import Runner

ROOT = Path(__file__).resolve().parents[1]


def _write(d: Path, name: str, text: str | bytes, rollback: str | None = None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        (d / f"{name}.sql").write_bytes(text)
    else:
        (d / f"{name}.sql").write_text(text)
    if rollback is not None:
        (d / f"{name}_rollback.sql").write_text(rollback)


def _q(dsn: str, query: str, *args):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, args).fetchone()[0]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def _as(dsn: str, user: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=user)


# --------------------------------------------------------------------------- item 6: INVALID indexes
@pytest.mark.integration
def test_a_unique_concurrent_build_on_duplicates_is_never_recorded(empty_dsn, tmp_path, capsys):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("create table t (id int, code int); insert into t values (1, 7), (2, 7)")
    _write(
        tmp_path,
        "20250101000000_uniq",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_code_key ON t (code);\n",
        "DROP INDEX CONCURRENTLY IF EXISTS t_code_key;\n",
    )
    for _ in range(2):  # the second run must not find a leftover INVALID index and call it applied
        assert main(["migrate", "up", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 2
        err = _one_line_error(capsys)
        assert "step 1 of 1" in err and "could not create unique index" in err, err
        assert _q(empty_dsn, "select count(*) from pg_index where indrelid = 't'::regclass") == 0
        assert [s for s, _, _ in Runner(empty_dsn, tmp_path).status()] == ["pending"]
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("update t set code = 8 where id = 2")
    assert main(["migrate", "up", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 0
    assert _q(empty_dsn, "select bool_and(indisvalid) from pg_index where indrelid = 't'::regclass") is True


@pytest.mark.integration
def test_if_not_exists_does_not_keep_an_invalid_index(empty_dsn, tmp_path):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("create table t (id int, code int); insert into t values (1, 7), (2, 7)")
        with pytest.raises(psycopg.errors.UniqueViolation):  # a failed build outside dbguard: INVALID index
            conn.execute("create unique index concurrently t_code_idx on t (code)")
    assert _q(empty_dsn, "select count(*) from pg_index where not indisvalid") == 1
    _write(tmp_path, "20250101000000_idx", "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_code_idx ON t (code);\n")
    [r] = Runner(empty_dsn, tmp_path).up()
    assert r.status == "applied"
    assert _q(empty_dsn, "select indisvalid from pg_index where indexrelid = 't_code_idx'::regclass") is True


@pytest.mark.integration
def test_an_unnamed_concurrent_build_is_checked_and_other_invalid_indexes_are_left_alone(empty_dsn, tmp_path):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("create table t (id int, code int); insert into t values (1, 7), (2, 7)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("create unique index concurrently someone_elses on t (code)")
    _write(tmp_path, "20250101000000_idx", "CREATE UNIQUE INDEX CONCURRENTLY ON t (code);\n")
    with pytest.raises(MigrationError, match="could not create unique index"):
        Runner(empty_dsn, tmp_path).up()
    names = _q(empty_dsn, "select array_agg(indexrelid::regclass::text) from pg_index where indrelid = 't'::regclass")
    assert names == ["someone_elses"]  # the runner's own INVALID index dropped, the other one untouched


# --------------------------------------------------------------------------- item 7: checksums
@pytest.mark.integration
def test_line_endings_and_a_final_newline_do_not_change_the_checksum(empty_dsn, tmp_path):
    _write(tmp_path, "20250101000000_one", "create table one (id int);\ncreate table two (id int);\n")
    Runner(empty_dsn, tmp_path).up()
    (tmp_path / "20250101000000_one.sql").write_bytes(b"create table one (id int);\r\ncreate table two (id int);")
    assert [s for s, _, _ in Runner(empty_dsn, tmp_path).status()] == ["applied"]
    assert Runner(empty_dsn, tmp_path).up() == []
    (tmp_path / "20250101000000_one.sql").write_bytes(b"create table one (id int);\r\ncreate table three (id int);")
    assert [s for s, _, _ in Runner(empty_dsn, tmp_path).status()] == ["CHANGED"]


OLD_LEDGER = """create schema dbguard;
create table dbguard.schema_migrations (name text primary key, checksum text not null,
  applied_at timestamptz not null default now(), duration interval not null,
  applied_by text not null default current_user);"""


@pytest.mark.integration
def test_an_old_ledger_keeps_working_and_is_upgraded_in_place(empty_dsn, tmp_path, capsys):
    raw = b"create table one (id int);\r\n"  # recorded byte-exact by an older dbguard, CRLF and all
    _write(tmp_path, "20250101000000_one", raw)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(OLD_LEDGER)
        conn.execute("create table one (id int)")
        conn.execute(
            "insert into dbguard.schema_migrations (name, checksum, duration) values (%s, %s, '1 second')",
            ("20250101000000_one", hashlib.sha256(raw).hexdigest()),
        )
    assert main(["migrate", "status", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 0
    assert "applied  20250101000000_one" in capsys.readouterr().out
    _write(tmp_path, "20250102000000_two", "create table two (id int);\n")
    for _ in range(2):  # the upgrade is idempotent
        assert main(["migrate", "up", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 0
        capsys.readouterr()
    cols = _q(
        empty_dsn,
        "select array_agg(attname::text order by attnum) from pg_attribute where attrelid = "
        "'dbguard.schema_migrations'::regclass and attnum > 0",
    )
    assert cols[-4:] == ["state", "steps_done", "steps_total", "rolled_back_at"]
    with psycopg.connect(empty_dsn) as conn:
        rows = conn.execute("select name, state, steps_done from dbguard.schema_migrations order by name").fetchall()
    assert rows == [("20250101000000_one", "applied", None), ("20250102000000_two", "applied", 1)]


# --------------------------------------------------------------------------- item 8: targets and files
@pytest.mark.integration
def test_a_read_only_database_is_one_line(databases, tmp_path, capsys):
    dsn = databases.create()
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(databases.server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("alter database {} set default_transaction_read_only = on").format(sql.Identifier(name)))
    _write(tmp_path, "20250101000000_one", "create table one (id int);")
    assert main(["migrate", "up", "--dsn", dsn, "--dir", str(tmp_path)]) == 2
    assert "read-only" in _one_line_error(capsys)


@pytest.mark.integration
def test_a_role_without_create_is_one_line(empty_dsn, tmp_path, capsys):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("drop role if exists dbguard_nocreate; create role dbguard_nocreate login")
    try:
        _write(tmp_path, "20250101000000_one", "create table one (id int);")
        assert main(["migrate", "up", "--dsn", _as(empty_dsn, "dbguard_nocreate"), "--dir", str(tmp_path)]) == 2
        err = _one_line_error(capsys)
        assert "cannot create the ledger" in err and "permission denied" in err, err
    finally:
        with psycopg.connect(empty_dsn, autocommit=True) as conn:
            conn.execute("drop role dbguard_nocreate")


@pytest.mark.integration
def test_absent_and_empty_folders_have_nothing_to_apply(empty_dsn, tmp_path, capsys):
    for d in (tmp_path / "absent", tmp_path):
        assert main(["migrate", "up", "--dsn", empty_dsn, "--dir", str(d)]) == 0
        assert "nothing to apply" in capsys.readouterr().out
        assert main(["migrate", "status", "--dsn", empty_dsn, "--dir", str(d)]) == 0
        assert "no migrations in" in capsys.readouterr().out


@pytest.mark.integration
def test_a_non_utf8_file_stops_the_run_before_anything_runs(empty_dsn, tmp_path, capsys):
    _write(tmp_path, "20250101000000_one", "create table one (id int);")
    _write(tmp_path, "20250102000000_two", b"create table two (id int); -- caf\xe9\n")
    assert main(["migrate", "up", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 2
    assert "is not UTF-8" in _one_line_error(capsys)
    assert _q(empty_dsn, "select to_regclass('one') is null")
    (tmp_path / "20250102000000_two.sql").unlink()
    (tmp_path / "20250102000000_two.sql").symlink_to(tmp_path / "gone.sql")  # dangling: unreadable
    assert main(["migrate", "up", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 2
    assert "cannot read" in _one_line_error(capsys)
    (tmp_path / "20250102000000_two.sql").unlink()
    _write(tmp_path, "20250102000000_two", "create table two (id int);")
    (tmp_path / "20250102000000_two_rollback.sql").write_bytes(b"drop table two; -- \xff")
    Runner(empty_dsn, tmp_path).up()
    assert main(["migrate", "rollback", "20250102000000_two", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 2
    assert "is not UTF-8" in _one_line_error(capsys)


def _unprivileged_cli(args: list[str], cwd: str) -> subprocess.CompletedProcess:
    """The CLI unable to read what is made unreadable: as root, without the capabilities that bypass file
    permissions (setpriv drops them from the bounding set)."""
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "running as root: the test needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE"
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [*prefix, sys.executable, "-m", "dbguard_pipeline.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.integration
def test_unreadable_files_and_folders_are_one_line(empty_dsn):
    base = tempfile.mkdtemp(prefix="dbguard-unreadable-")
    try:
        d = Path(base) / "migrations"
        _write(d, "20250101000000_one", "create table one (id int);")
        os.chmod(d, 0o755)
        os.chmod(d / "20250101000000_one.sql", 0)
        proc = _unprivileged_cli(["migrate", "up", "--dsn", empty_dsn, "--dir", str(d)], base)
        assert proc.returncode == 2 and "cannot read" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        os.chmod(d, 0)
        for cmd in ("up", "status"):
            proc = _unprivileged_cli(["migrate", cmd, "--dsn", empty_dsn, "--dir", str(d)], base)
            assert proc.returncode == 2 and "cannot read the migrations folder" in proc.stderr, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1 and "nothing to apply" not in proc.stdout
        assert _q(empty_dsn, "select to_regclass('one') is null")
    finally:
        os.chmod(Path(base) / "migrations", 0o755)
        shutil.rmtree(base)


@pytest.mark.integration
def test_a_createdb_role_that_does_not_own_the_target_gets_the_schema_only_copy(demo_dsn):
    from dbguard_pipeline.pg.scratch import scratch_database

    with psycopg.connect(demo_dsn, autocommit=True) as conn:
        conn.execute("drop role if exists dbguard_creator; create role dbguard_creator login createdb")
        for (schema,) in conn.execute(
            "select nspname from pg_namespace where nspname not like 'pg\\_%' and nspname <> 'information_schema'"
        ).fetchall():
            conn.execute(
                sql.SQL(
                    "grant usage on schema {0} to dbguard_creator; grant select on all tables in "
                    "schema {0} to dbguard_creator"
                ).format(sql.Identifier(schema))
            )
    try:
        with scratch_database(_as(demo_dsn, "dbguard_creator")) as (scratch, method):
            assert method == "schema-only"
            tables = _q(scratch, "select count(*) from pg_tables where schemaname = 'public'")
            assert tables == _q(demo_dsn, "select count(*) from pg_tables where schemaname = 'public'") > 0
            assert _q(scratch, "select count(*) from pg_policies") == _q(demo_dsn, "select count(*) from pg_policies")
    finally:
        with psycopg.connect(demo_dsn, autocommit=True) as conn:
            conn.execute("drop owned by dbguard_creator; drop role dbguard_creator")
