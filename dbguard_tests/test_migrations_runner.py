"""The runner (`dbguard migrate`): ledger, order, checksums, no-transaction steps, automatic rollback, CLI."""

from __future__ import annotations

import psycopg
import pytest

from dbguard_pipeline.cli import main
from dbguard_pipeline.errors import MigrationError
from dbguard_pipeline.fixes.ledger import Runner, parse_units


def _write(d, name, text, rollback=None):
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.sql").write_text(text)
    if rollback is not None:
        (d / f"{name}_rollback.sql").write_text(rollback)


def _exists(dsn, relation):
    with psycopg.connect(dsn) as conn:
        return conn.execute("select to_regclass(%s) is not null", (relation,)).fetchone()[0]


def test_units_follow_begin_commit_markers_and_concurrently():
    text = """SET lock_timeout = '1s';
BEGIN;
create table a (id int);
COMMIT;
-- dbguard:no-transaction
DO $$ begin perform 1; end $$;
create index concurrently if not exists i on a (id);
create table b (id int);
create table c (id int);
"""
    units = parse_units(text)
    assert [(u.transactional, len(u.statements)) for u in units] == [
        (True, 1),
        (True, 1),
        (False, 1),
        (False, 1),
        (True, 2),
    ]
    with pytest.raises(MigrationError, match="inside BEGIN"):
        parse_units("BEGIN;\ncreate index concurrently i on a (id);\nCOMMIT;")
    with pytest.raises(MigrationError, match="BEGIN without COMMIT"):
        parse_units("BEGIN;\ncreate table x (id int);")
    with pytest.raises(MigrationError, match="cannot parse"):
        parse_units("create tabel x (id int);")


@pytest.mark.integration
def test_ledger_records_each_file_once_in_order(empty_dsn, tmp_path):
    _write(tmp_path, "20250101000000_one", "create table one (id int);", "drop table if exists one;")
    _write(
        tmp_path,
        "20250102000000_two",
        "create table two (id int);\ncreate index concurrently two_idx on two (id);",
        "drop table if exists two;",
    )
    runner = Runner(empty_dsn, tmp_path)
    assert [r.name for r in runner.up()] == ["20250101000000_one", "20250102000000_two"]
    assert runner.up() == []
    with psycopg.connect(empty_dsn) as conn:
        rows = conn.execute(
            "select name, checksum, applied_at is not null, duration >= interval '0' "
            "from dbguard.schema_migrations order by applied_at, name"
        ).fetchall()
    assert [r[0] for r in rows] == ["20250101000000_one", "20250102000000_two"]
    assert all(len(r[1]) == 64 and r[2] and r[3] for r in rows)
    assert _exists(empty_dsn, "two_idx")
    assert [s for s, _, _ in runner.status()] == ["applied", "applied"]


@pytest.mark.integration
def test_an_edited_applied_file_stops_the_run(empty_dsn, tmp_path, capsys):
    _write(tmp_path, "20250101000000_one", "create table one (id int);")
    Runner(empty_dsn, tmp_path).up()
    (tmp_path / "20250101000000_one.sql").write_text("create table one (id int, evil text);")
    _write(tmp_path, "20250102000000_two", "create table two (id int);")
    with pytest.raises(MigrationError, match="must not be edited"):
        Runner(empty_dsn, tmp_path).up()
    assert not _exists(empty_dsn, "two")
    assert main(["migrate", "status", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 1
    assert "CHANGED  20250101000000_one" in capsys.readouterr().out
    rc = main(["migrate", "up", "--dsn", empty_dsn, "--dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "checksum" in err and len(err.strip().splitlines()) == 1


@pytest.mark.integration
def test_out_of_order_file_is_refused(empty_dsn, tmp_path):
    _write(tmp_path, "20250102000000_two", "create table two (id int);")
    Runner(empty_dsn, tmp_path).up()
    _write(tmp_path, "20250101000000_one", "create table one (id int);")
    with pytest.raises(MigrationError, match="out-of-order"):
        Runner(empty_dsn, tmp_path).up()
    assert not _exists(empty_dsn, "one")


THREE = ("20250101000000_one", "20250102000000_two", "20250103000000_three")


def _three(d):
    for name in THREE:
        table = name.split("_", 1)[1]
        _write(d, name, f"create table {table} (id int);", f"drop table if exists {table};")


def _ledger(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select name, state, rolled_back_at is not null from dbguard.schema_migrations order by name"
        ).fetchall()


@pytest.mark.integration
@pytest.mark.parametrize("undo", [["20250102000000_two"], ["20250103000000_three", "20250102000000_two"]])
def test_a_rolled_back_migration_is_applied_again(empty_dsn, tmp_path, capsys, undo):
    _three(tmp_path)
    runner = Runner(empty_dsn, tmp_path)
    assert [r.name for r in runner.up()] == list(THREE)
    for name in undo:
        assert main(["migrate", "rollback", name, "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 0
        assert not _exists(empty_dsn, name.split("_", 1)[1])
    assert _exists(empty_dsn, "one")
    states = {n: ("rolled_back", True) if n in undo else ("applied", False) for n in THREE}
    assert _ledger(empty_dsn) == [(n, *states[n]) for n in THREE]
    capsys.readouterr()
    assert main(["migrate", "status", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    for name, line in zip(THREE, out, strict=True):
        if name in undo:
            assert line.startswith(f"pending  {name}  rolled back ") and "migrate up` applies it again" in line
        else:
            assert line.startswith(f"applied  {name}  applied ")
    # rolling back what is already rolled back is one line, exit 2
    assert main(["migrate", "rollback", undo[0], "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 2
    assert "is not applied (it was rolled back at " in capsys.readouterr().err
    # up re-applies exactly what was rolled back, in name order, not "out-of-order"
    assert main(["migrate", "up", "--dry-run", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 0
    assert [ln.split()[2].rstrip(":") for ln in capsys.readouterr().out.splitlines()] == sorted(undo)
    assert [r.name for r in Runner(empty_dsn, tmp_path).up()] == sorted(undo)
    assert all(_exists(empty_dsn, n.split("_", 1)[1]) for n in THREE)
    assert [(n, s) for n, s, _ in _ledger(empty_dsn)] == [(n, "applied") for n in THREE]
    assert [s for s, _, _ in Runner(empty_dsn, tmp_path).status()] == ["applied"] * 3
    assert Runner(empty_dsn, tmp_path).up() == []


@pytest.mark.integration
def test_checksums_still_hold_around_a_rollback(empty_dsn, tmp_path, capsys):
    _three(tmp_path)
    Runner(empty_dsn, tmp_path).up()
    Runner(empty_dsn, tmp_path).rollback("20250102000000_two")
    # an applied file edited: still refused
    (tmp_path / "20250101000000_one.sql").write_text("create table one (id int, evil text);")
    with pytest.raises(MigrationError, match="20250101000000_one was applied .* must not be edited"):
        Runner(empty_dsn, tmp_path).up()
    (tmp_path / "20250101000000_one.sql").write_text("create table one (id int);")
    # the rolled-back file edited: a new migration that sorts before an applied one, so out of order
    (tmp_path / "20250102000000_two.sql").write_text("create table two (id int, extra text);")
    with pytest.raises(MigrationError, match="rolled back and its file changed since .* out-of-order"):
        Runner(empty_dsn, tmp_path).up()
    assert not _exists(empty_dsn, "two")
    assert "the file changed since" in Runner(empty_dsn, tmp_path).status()[1][2]
    # restored: applied again, and its new row is checked like any applied one
    (tmp_path / "20250102000000_two.sql").write_text("create table two (id int);")
    assert [r.name for r in Runner(empty_dsn, tmp_path).up()] == ["20250102000000_two"]
    (tmp_path / "20250102000000_two.sql").write_text("create table two (id int, extra text);")
    with pytest.raises(MigrationError, match="20250102000000_two was applied .* must not be edited"):
        Runner(empty_dsn, tmp_path).up()
    # the latest file rolled back and edited: nothing applied after it, so it is simply applied
    (tmp_path / "20250102000000_two.sql").write_text("create table two (id int);")
    Runner(empty_dsn, tmp_path).rollback("20250103000000_three")
    (tmp_path / "20250103000000_three.sql").write_text("create table three (id int, extra text);")
    assert [r.name for r in Runner(empty_dsn, tmp_path).up()] == ["20250103000000_three"]


@pytest.mark.integration
def test_a_failed_reapply_keeps_the_rolled_back_row(empty_dsn, tmp_path):
    _three(tmp_path)
    Runner(empty_dsn, tmp_path).up()
    Runner(empty_dsn, tmp_path).rollback("20250102000000_two")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("create table two (blocker int)")  # the re-apply's CREATE TABLE fails
    with pytest.raises(MigrationError, match="nothing was changed"):
        Runner(empty_dsn, tmp_path).up()
    assert _ledger(empty_dsn)[1] == ("20250102000000_two", "rolled_back", True)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("drop table two")
    assert [r.name for r in Runner(empty_dsn, tmp_path).up()] == ["20250102000000_two"]


OLD_STATE_LEDGER = """create schema dbguard;
create table dbguard.schema_migrations (name text primary key, checksum text not null,
  applied_at timestamptz not null default now(), duration interval not null,
  applied_by text not null default current_user,
  state text not null default 'applied' check (state in ('applied', 'partial')),
  steps_done integer, steps_total integer);"""


@pytest.mark.integration
def test_a_ledger_with_the_two_state_check_is_upgraded_for_rollback(empty_dsn, tmp_path):
    from dbguard_pipeline.fixes.ledger import checksum

    _three(tmp_path)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(OLD_STATE_LEDGER)
        for name in THREE:
            conn.execute(f"create table {name.split('_', 1)[1]} (id int)")
            conn.execute(
                "insert into dbguard.schema_migrations (name, checksum, duration, steps_done, steps_total)"
                " values (%s, %s, '1 second', 1, 1)",
                (name, checksum(tmp_path / f"{name}.sql")),
            )
    assert [s for s, _, _ in Runner(empty_dsn, tmp_path).status()] == ["applied"] * 3
    Runner(empty_dsn, tmp_path).rollback("20250102000000_two")
    assert _ledger(empty_dsn)[1] == ("20250102000000_two", "rolled_back", True)
    with psycopg.connect(empty_dsn) as conn:
        checks = conn.execute(
            "select pg_get_constraintdef(oid) from pg_constraint where conrelid ="
            " 'dbguard.schema_migrations'::regclass and contype = 'c'"
        ).fetchall()
    assert len(checks) == 1 and "rolled_back" in checks[0][0]
    assert [r.name for r in Runner(empty_dsn, tmp_path).up()] == ["20250102000000_two"]


@pytest.mark.integration
def test_failure_after_a_committed_step_applies_the_rollback(empty_dsn, tmp_path):
    _write(
        tmp_path,
        "20250101000000_half",
        "BEGIN;\ncreate table half (id int);\nCOMMIT;\n"
        "-- dbguard:no-transaction\ncreate index concurrently if not exists half_idx on half (id);\n"
        "BEGIN;\ninsert into half values (1);\nselect 1 / 0;\nCOMMIT;\n",
        "-- dbguard:no-transaction\ndrop index concurrently if exists half_idx;\n"
        "BEGIN;\ndrop table if exists half;\nCOMMIT;\n",
    )
    with pytest.raises(
        MigrationError,
        match=r"step 3 of 3 \(line 7\) failed: division by zero; "
        r"20250101000000_half_rollback.sql was applied",
    ):
        Runner(empty_dsn, tmp_path).up()
    assert not _exists(empty_dsn, "half")
    assert not _exists(empty_dsn, "half_idx")
    assert Runner(empty_dsn, tmp_path).status()[0][0] == "pending"


@pytest.mark.integration
def test_failure_in_the_first_step_changes_nothing(empty_dsn, tmp_path):
    _write(
        tmp_path,
        "20250101000000_bad",
        "create table t1 (id int);\ncreate table t1 (id int);",
        "drop table if exists t1;",
    )
    with pytest.raises(MigrationError, match="nothing was changed"):
        Runner(empty_dsn, tmp_path).up()
    assert not _exists(empty_dsn, "t1")


@pytest.mark.integration
def test_dry_run_writes_nothing(empty_dsn, tmp_path, capsys):
    _write(
        tmp_path,
        "20250101000000_one",
        "BEGIN;\ncreate table one (id int);\nCOMMIT;\n"
        "-- dbguard:no-transaction\ncreate index concurrently i on one (id);",
    )
    assert main(["migrate", "up", "--dry-run", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 0
    assert "would apply 20250101000000_one: 2 steps (tx, no-tx)  [no rollback file]" in capsys.readouterr().out
    assert not _exists(empty_dsn, "one")
    assert not _exists(empty_dsn, "dbguard.schema_migrations")


@pytest.mark.integration
def test_rollback_by_name_through_the_cli(empty_dsn, tmp_path, capsys):
    _write(tmp_path, "20250101000000_one", "create table one (id int);", "drop table if exists one;")
    assert main(["migrate", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 0
    assert "1 migration applied" in capsys.readouterr().out
    assert main(["migrate", "rollback", "20250101000000_one", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 0
    assert not _exists(empty_dsn, "one")
    assert main(["migrate", "rollback", "20250101000000_one", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 2
    assert "is not applied" in capsys.readouterr().err
    assert main(["migrate", "rollback", "--dsn", empty_dsn, "--dir", str(tmp_path)]) == 2
    assert main(["migrate", "--dsn", empty_dsn, "--dir", str(tmp_path / "nope")]) == 0  # issue #11/#13: absent = empty
    assert "nothing to apply" in capsys.readouterr().out


@pytest.mark.integration
def test_one_runner_at_a_time(empty_dsn, tmp_path):
    _write(tmp_path, "20250101000000_one", "create table one (id int);")
    with psycopg.connect(empty_dsn, autocommit=True) as other:
        other.execute("select pg_advisory_lock(%s)", (0x64626775,))
        with pytest.raises(MigrationError, match="another dbguard migrate is running"):
            Runner(empty_dsn, tmp_path).up()
    assert Runner(empty_dsn, tmp_path).up()


@pytest.mark.security
def test_the_password_never_reaches_the_output(empty_dsn, tmp_path, capsys):
    from psycopg import conninfo

    from dbguard_pipeline.pg.dsn import parse_dsn

    params = parse_dsn(empty_dsn)
    params["password"] = "s3cr3t-Pa55"
    dsn = conninfo.make_conninfo(**params)  # the embedded server trusts its socket: the password is unused
    _write(tmp_path, "20250101000000_one", "create table one (id int);", "drop table if exists one;")
    _write(tmp_path, "20250102000000_bad", "select 1 / 0;")
    for argv in (["migrate", "up"], ["migrate", "status"], ["migrate", "rollback", "20250101000000_one"]):
        main([*argv, "--dsn", dsn, "--dir", str(tmp_path)])
    out = capsys.readouterr()
    assert "s3cr3t-Pa55" not in out.out + out.err
    assert "division by zero" in out.err  # the failure itself was reported
    rc = main(["generate-migration", "fix-rls-policy", "x", "--dsn", dsn, "--out-dir", str(tmp_path / "g")])
    out = capsys.readouterr()
    assert rc == 2 and "s3cr3t-Pa55" not in out.out + out.err


@pytest.mark.security
def test_generated_files_and_output_hold_no_password(demo_dsn, tmp_path, capsys):
    from psycopg import conninfo

    from dbguard_pipeline.pg.dsn import parse_dsn

    params = parse_dsn(demo_dsn)
    params["password"] = "s3cr3t-Pa55"
    dsn = conninfo.make_conninfo(**params)
    out_dir = tmp_path / "g"
    assert main(["generate-migration", "--all", "--dsn", dsn, "--out-dir", str(out_dir)]) == 0
    out = capsys.readouterr()
    assert "round trip on a scratch copy (template): 14/14 ok" in out.out
    assert "s3cr3t-Pa55" not in out.out + out.err
    files = list(out_dir.iterdir())
    assert len(files) == 28
    for f in files:
        text = f.read_text()
        assert "s3cr3t-Pa55" not in text and "password" not in text.lower()
