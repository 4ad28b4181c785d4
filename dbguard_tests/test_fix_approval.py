"""dbguard fix (issue 16): approval records, backup -> apply -> verify on the live database -> automatic rollback
and restore on regression, the outcome ledger, the backend killed during apply, migrate up with
require_approval, and the Dagster apply_approved_migrations job. Real PostgreSQL (a copy of the demo)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from dbguard_pipeline import services
from dbguard_pipeline.config import Config
from dbguard_pipeline.fixes.ledger import Runner, applied_names

from .test_backup import contents, dbguard, one_line_error

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """Backups go to $DBGUARD_HOME/backups: a folder of the test's own (the CLI runs inherit it)."""
    monkeypatch.setenv("DBGUARD_HOME", str(tmp_path / "home"))


TABLE = "public.vehicle_spec_enhancements"  # isolated by a tenant policy in the demo

# Benign: an index on a tenant table (schema only, nothing gets worse).
GOOD = "CREATE INDEX IF NOT EXISTS vse_source_idx ON public.vehicle_spec_enhancements (source);\n"
GOOD_RB = "DROP INDEX IF EXISTS public.vse_source_idx;\n"

# Breaks isolation on purpose and changes rows; its rollback restores RLS but not the rows.
BAD = (
    "-- a deliberately bad migration\n"
    "BEGIN;\n"
    "ALTER TABLE public.vehicle_spec_enhancements DISABLE ROW LEVEL SECURITY;\n"
    "UPDATE public.vehicle_spec_enhancements SET source = 'overwritten';\n"
    "COMMIT;\n"
)
BAD_RB = "ALTER TABLE public.vehicle_spec_enhancements ENABLE ROW LEVEL SECURITY;\n"

# Two steps: a committed schema change, then a long data step (killed while it runs).
SLOW = (
    "BEGIN;\n"
    "ALTER TABLE public.vehicle_spec_enhancements ADD COLUMN note text;\n"
    "COMMIT;\n"
    "BEGIN;\n"
    "UPDATE public.vehicle_spec_enhancements SET note = 'x';\n"
    "SELECT pg_sleep(60);\n"
    "COMMIT;\n"
)
SLOW_RB = "ALTER TABLE public.vehicle_spec_enhancements DROP COLUMN IF EXISTS note;\n"


def write(folder: Path, name: str, forward: str, rollback: str | None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.sql").write_text(forward)
    if rollback is not None:
        (folder / f"{name}_rollback.sql").write_text(rollback)
    return name


def fix(dsn: str, folder: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return dbguard("fix", "--dsn", dsn, "--dir", str(folder), *args, stdin=subprocess.DEVNULL, **kw)


def outcome_rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        if not conn.execute("select to_regclass('dbguard.fix_outcomes') is not null").fetchone()[0]:
            return []
        return conn.execute(
            "select name, outcome, reason, approved_by, backup is not null, data_restored"
            " from dbguard.fix_outcomes order by id"
        ).fetchall()


def rls_enabled(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select relrowsecurity from pg_class where oid = %s::regclass", (TABLE,)).fetchone()[0]


# --------------------------------------------------------------------------- approval
def test_unapproved_migration_is_never_applied_by_fix(demo_dsn, tmp_path):
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_index", GOOD, GOOD_RB)
    before = contents(demo_dsn)
    proc = fix(demo_dsn, folder)
    line = one_line_error(proc, "not approved", "no terminal", name)
    assert "--approve" in line
    assert name in proc.stdout and "SQL:" in proc.stdout and "CREATE INDEX" in proc.stdout  # it was shown
    assert applied_names(demo_dsn) == set()
    assert not (folder / "approvals").exists()
    # the service alone applies nothing without an approval record either
    run = services.apply_approved(demo_dsn, Config(), folder)
    assert [(o.name, o.outcome, o.reason) for o in run.outcomes] == [(name, "skipped", "not approved")]
    assert applied_names(demo_dsn) == set() and contents(demo_dsn) == before
    # --dry-run with --yes: would approve and would apply, writes and applies nothing
    dry = fix(demo_dsn, folder, "--yes", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would approve {name}" in dry.stdout
    assert not (folder / "approvals").exists() and applied_names(demo_dsn) == set()


def test_approve_then_apply_records_who_and_the_checksum(demo_dsn, tmp_path):
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_index", GOOD, GOOD_RB)
    proc = fix(demo_dsn, folder, "--approve", f"{name}.sql", "--by", "alice", "--no-apply")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((folder / "approvals" / f"{name}.json").read_text())
    runner_file = Runner(demo_dsn, folder).files()[0]
    assert record["approved_by"] == "alice" and record["checksum"] == runner_file.checksum
    assert record["migration"] == name and record["rollback_checksum"]
    assert applied_names(demo_dsn) == set()  # --no-apply
    # a committed approval: a non-interactive run applies it (GitOps), verified
    proc = fix(demo_dsn, folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"applied+verified           {name}" in proc.stdout
    assert applied_names(demo_dsn) == {name}
    assert outcome_rows(demo_dsn) == [(name, "applied+verified", "", "alice", False, None)]
    again = fix(demo_dsn, folder)
    assert again.returncode == 0 and "nothing pending" in again.stdout


def test_on_a_terminal_fix_asks_per_migration(demo_dsn, tmp_path):
    import os

    folder = tmp_path / "migrations"
    first = write(folder, "20260101000000_first", GOOD, GOOD_RB)
    second = write(folder, "20260101000001_second", GOOD.replace("vse_source_idx", "vse_two_idx"), GOOD_RB)
    master, slave = os.openpty()  # stdin is a terminal: fix asks
    env = {k: v for k, v in os.environ.items() if k != "DBGUARD_DATABASE_URL"}
    try:
        os.write(master, b"y\nn\n")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "dbguard_pipeline.cli",
                "fix",
                "--dsn",
                demo_dsn,
                "--dir",
                str(folder),
                "--by",
                "eve",
            ],
            stdin=slave,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"apply {first}? [y/n]" in proc.stdout and f"apply {second}? [y/n]" in proc.stdout
    assert f"approved {first} by eve" in proc.stdout and f"not approved: {second}" in proc.stdout
    assert applied_names(demo_dsn) == {first}
    assert (folder / "approvals" / f"{first}.json").exists()
    assert not (folder / "approvals" / f"{second}.json").exists()


def test_an_approval_of_a_changed_file_is_refused(demo_dsn, tmp_path, server_dsn):
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_index", GOOD, GOOD_RB)
    services.approve_migrations(folder, [name], "alice")
    (folder / f"{name}.sql").write_text(GOOD + "DROP INDEX public.vse_source_idx;\n")  # edited after approval
    proc = fix(demo_dsn, folder)
    line = one_line_error(proc, name, "approval is void", "checksum")
    assert "alice" in line
    run = services.apply_approved(demo_dsn, Config(), folder)
    assert run.outcomes[0].outcome == "skipped" and "approval is void" in run.outcomes[0].reason
    assert applied_names(demo_dsn) == set()
    # migrate up with require_approval refuses it too, in one line
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text("require_approval: true\n")
    up = dbguard("migrate", "up", "--dsn", demo_dsn, "--dir", str(folder), "--config", str(cfg))
    one_line_error(up, name, "approval is void", "require_approval")
    assert applied_names(demo_dsn) == set()
    # a changed rollback file voids it as well
    (folder / f"{name}.sql").write_text(GOOD)
    (folder / f"{name}_rollback.sql").write_text(GOOD_RB + "SELECT 1;\n")
    up = dbguard("migrate", "up", "--dsn", demo_dsn, "--dir", str(folder), "--config", str(cfg))
    one_line_error(up, name, "rollback file changed")
    assert applied_names(demo_dsn) == set()


def test_migrate_up_with_require_approval_applies_only_after_approval(demo_dsn, tmp_path):
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_index", GOOD, GOOD_RB)
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text("require_approval: true\n")
    up = dbguard("migrate", "up", "--dsn", demo_dsn, "--dir", str(folder), "--config", str(cfg))
    one_line_error(up, name, "not approved", "require_approval: true")
    assert applied_names(demo_dsn) == set()
    dry = dbguard("migrate", "up", "--dry-run", "--dsn", demo_dsn, "--dir", str(folder), "--config", str(cfg))
    assert "REFUSED: not approved" in dry.stdout
    # without the setting, migrate up stays the manual runner
    services.approve_migrations(folder, [name], "bob")
    up = dbguard("migrate", "up", "--dsn", demo_dsn, "--dir", str(folder), "--config", str(cfg))
    assert up.returncode == 0, up.stderr
    assert applied_names(demo_dsn) == {name}


def test_rejected_migrations_cannot_be_approved(tmp_path):
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_x", "-- REJECTED (do not apply): it leaks\n" + GOOD, GOOD_RB)
    with pytest.raises(Exception, match="rejected by the round trip"):
        services.approve_migrations(folder, [name], "alice")
    assert not (folder / "approvals" / f"{name}.json").exists()


# --------------------------------------------------------------------------- regression -> rollback + restore
def test_a_migration_that_breaks_isolation_is_rolled_back_and_its_data_restored(demo_dsn, tmp_path):
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_break_isolation", BAD, BAD_RB)
    before = contents(demo_dsn)
    proc = fix(demo_dsn, folder, "--approve", name, "--by", "mallory")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"rolled_back_on_regression  {name}" in proc.stdout
    assert "data restored from" in proc.stdout and "checksums equal to the backup" in proc.stdout
    assert "new findings" in proc.stdout  # the audit verdict failed
    assert "alert log: sent" in proc.stdout
    # the database is as before: rows (checksums equal), RLS back on, the ledger does not list it
    assert contents(demo_dsn) == before
    assert rls_enabled(demo_dsn)
    assert applied_names(demo_dsn) == set()
    rows = outcome_rows(demo_dsn)
    assert len(rows) == 1
    got_name, outcome, reason, by, has_backup, restored = rows[0]
    assert (got_name, outcome, by, has_backup, restored) == (name, "rolled_back_on_regression", "mallory", True, True)
    assert "new findings: " in reason and "new leaks: " in reason and "rolled back" in reason
    # the next run says what happened and does not try the same text again
    again = fix(demo_dsn, folder)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "last attempt: rolled_back_on_regression" in again.stdout
    assert "change the file" in again.stdout
    status = dbguard("migrate", "status", "--dsn", demo_dsn, "--dir", str(folder))
    assert f"pending  {name}" in status.stdout
    assert "last dbguard fix attempt: rolled_back_on_regression" in status.stdout
    assert contents(demo_dsn) == before


def test_a_regression_whose_rollback_returns_the_rows_needs_no_restore(demo_dsn, tmp_path):
    folder = tmp_path / "migrations"
    forward = "ALTER TABLE public.vehicle_spec_enhancements DISABLE ROW LEVEL SECURITY;\n"
    name = write(folder, "20260101000000_rls_off", forward, BAD_RB)
    services.approve_migrations(folder, [name], "alice")
    cfg = Config(fix_backup="all", backup_dir=str(tmp_path / "backups"))
    run = services.apply_approved(demo_dsn, cfg, folder, alert=False)
    (o,) = run.outcomes
    assert o.outcome == "rolled_back_on_regression", o.line()
    assert o.backup and o.data_restored is False and "no restore needed" in o.reason
    assert rls_enabled(demo_dsn) and applied_names(demo_dsn) == set()


def test_a_rollback_that_fails_is_recorded_alerted_and_not_retried(demo_dsn, tmp_path, caplog):
    folder = tmp_path / "migrations"
    forward = "ALTER TABLE public.vehicle_spec_enhancements DISABLE ROW LEVEL SECURITY;\n"
    name = write(
        folder, "20260101000000_rls_off", forward, "ALTER TABLE public.no_such_table ENABLE ROW LEVEL SECURITY;\n"
    )
    services.approve_migrations(folder, [name], "alice")
    with caplog.at_level("ERROR", logger="dbguard.alerts"):
        run = services.apply_approved(demo_dsn, Config(), folder)
    (o,) = run.outcomes
    assert o.outcome == "rollback_failed" and "the rollback failed" in o.reason and "no_such_table" in o.reason
    assert o.alerts == ["log: sent"]
    assert any("rollback failed" in r.getMessage() and name in r.getMessage() for r in caplog.records)
    assert outcome_rows(demo_dsn)[0][1] == "rollback_failed"
    assert not rls_enabled(demo_dsn)  # a person must look: the ledger still lists it as applied
    assert name in applied_names(demo_dsn)


# --------------------------------------------------------------------------- faults
def _kill_when_sleeping(dsn: str, done: threading.Event, killed: list[int]) -> None:
    deadline = time.monotonic() + 120
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline and not done.is_set():
            row = conn.execute(
                "select pid from pg_stat_activity where datname = current_database()"
                " and application_name = 'dbguard migrate' and query like '%%pg_sleep%%' and state = 'active'"
            ).fetchone()
            if row:
                conn.execute("select pg_terminate_backend(%s)", (row[0],))
                killed.append(row[0])
                return
            time.sleep(0.1)


def test_backend_killed_during_apply_leaves_the_database_unchanged(demo_dsn, tmp_path):
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_slow", SLOW, SLOW_RB)
    services.approve_migrations(folder, [name], "alice")
    before = contents(demo_dsn)
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_when_sleeping, args=(demo_dsn, done, killed))
    killer.start()
    try:
        proc = fix(demo_dsn, folder)
    finally:
        done.set()
        killer.join()
    assert killed, "the apply was never seen running"
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"failed                     {name}" in proc.stdout
    assert "database is as it was before" in proc.stdout
    assert contents(demo_dsn) == before
    with psycopg.connect(demo_dsn) as conn:
        cols = conn.execute(
            "select count(*) from pg_attribute where attrelid = %s::regclass and attname = 'note'", (TABLE,)
        ).fetchone()[0]
    assert cols == 0 and applied_names(demo_dsn) == set()
    (row,) = outcome_rows(demo_dsn)
    assert row[1] == "failed" and "as it was before" in row[2]
    # the next run says what happened (it may try again: the approval still holds)
    nxt = fix(demo_dsn, folder, "--dry-run")
    assert nxt.returncode == 0, nxt.stderr
    assert "last attempt: failed" in nxt.stdout and "as it was before" in nxt.stdout
    assert "would apply" in nxt.stdout


def test_the_fix_process_killed_during_apply_is_reported_by_the_next_run(demo_dsn, tmp_path):
    import os
    import signal

    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_slow", SLOW, SLOW_RB)
    services.approve_migrations(folder, [name], "alice")
    before = contents(demo_dsn)
    env = {k: v for k, v in os.environ.items() if k != "DBGUARD_DATABASE_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbguard_pipeline.cli", "fix", "--dsn", demo_dsn, "--dir", str(folder)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 120
    with psycopg.connect(demo_dsn, autocommit=True) as conn:
        pid = None
        while pid is None and time.monotonic() < deadline:
            row = conn.execute(
                "select pid from pg_stat_activity where datname = current_database()"
                " and application_name = 'dbguard migrate' and query like '%%pg_sleep%%' and state = 'active'"
            ).fetchone()
            pid = row[0] if row else None
            time.sleep(0.1)
        assert pid is not None, "the apply was never seen running"
        os.kill(proc.pid, signal.SIGKILL)  # the process dies; its backend would sleep on
        proc.wait(timeout=30)
        conn.execute("select pg_terminate_backend(%s)", (pid,))
    # step 1 of 2 was committed: the ledger says so, and the next run says what happened and refuses to go on
    nxt = fix(demo_dsn, folder, "--dry-run")
    assert nxt.returncode == 0, nxt.stderr
    assert "never finished" in nxt.stdout and "half-applied at step 1 of 2" in nxt.stdout
    assert f"skipped                    {name}: half-applied" in nxt.stdout
    (row,) = outcome_rows(demo_dsn)
    assert row[1] == "started"
    back = dbguard("migrate", "rollback", name, "--dsn", demo_dsn, "--dir", str(folder))
    assert back.returncode == 0, back.stderr
    assert contents(demo_dsn) == before


def test_the_run_stops_at_the_first_migration_that_cannot_be_applied(demo_dsn, tmp_path):
    folder = tmp_path / "migrations"
    first = write(folder, "20260101000000_first", GOOD, GOOD_RB)
    second = write(folder, "20260101000001_second", GOOD.replace("vse_source_idx", "vse_two_idx"), None)
    third = write(folder, "20260101000002_third", GOOD.replace("vse_source_idx", "vse_three_idx"), GOOD_RB)
    services.approve_migrations(folder, [first, second, third], "alice")
    run = services.apply_approved(demo_dsn, Config(), folder)
    assert [(o.name, o.outcome) for o in run.outcomes] == [
        (first, "applied+verified"),
        (second, "skipped"),
        (third, "skipped"),
    ]
    assert "no rollback file" in run.outcomes[1].reason and second in run.outcomes[2].reason
    assert applied_names(demo_dsn) == {first}


# --------------------------------------------------------------------------- Dagster
def test_the_dagster_job_applies_only_the_approved_migration(demo_dsn, tmp_path):
    import dagster as dg

    from dbguard_pipeline.defs.apply_migrations import apply_approved_migrations_job, last_fix_outcomes
    from dbguard_pipeline.defs.resources import PostgresResource

    folder = tmp_path / "migrations"
    approved = write(folder, "20260101000000_approved", GOOD, GOOD_RB)
    waiting = write(folder, "20260101000001_waiting", GOOD.replace("vse_source_idx", "vse_two_idx"), GOOD_RB)
    services.approve_migrations(folder, [approved], "alice")
    resource = PostgresResource(dsn=demo_dsn)
    result = apply_approved_migrations_job.execute_in_process(
        run_config={"ops": {"apply_approved": {"config": {"migrations_dir": str(folder)}}}},
        resources={"database": resource},
        raise_on_error=False,
    )
    assert result.success
    assert applied_names(demo_dsn) == {approved}
    assert waiting not in applied_names(demo_dsn)
    meta = next(
        e.step_output_data.metadata
        for e in result.all_events
        if e.event_type_value == "STEP_OUTPUT" and e.step_key == "apply_approved"
    )
    assert meta["applied"].value == 1 and meta["waiting"].value == 1
    # the next night's check shows the outcome, read from the ledger
    check = last_fix_outcomes(dg.build_asset_check_context(), database=resource)  # type: ignore[call-arg]
    assert check.passed
    table = check.metadata["outcomes"].value
    assert [(r.data["migration"], r.data["outcome"]) for r in table.records] == [(approved, "applied+verified")]


def test_the_dagster_job_fails_and_the_check_warns_after_a_regression(demo_dsn, tmp_path):
    import dagster as dg

    from dbguard_pipeline.defs.apply_migrations import apply_approved_migrations_job, last_fix_outcomes
    from dbguard_pipeline.defs.resources import PostgresResource

    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_break_isolation", BAD, BAD_RB)
    services.approve_migrations(folder, [name], "alice")
    before = contents(demo_dsn)
    resource = PostgresResource(dsn=demo_dsn)
    result = apply_approved_migrations_job.execute_in_process(
        run_config={"ops": {"apply_approved": {"config": {"migrations_dir": str(folder)}}}},
        resources={"database": resource},
        raise_on_error=False,
    )
    assert not result.success
    assert contents(demo_dsn) == before and applied_names(demo_dsn) == set()
    check = last_fix_outcomes(dg.build_asset_check_context(), database=resource)  # type: ignore[call-arg]
    assert not check.passed and "rolled_back_on_regression" in (check.description or "")


def test_fix_help_is_clear():
    proc = dbguard("fix", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for needle in ("--approve NAME", "--yes", "--no-apply", "--dry-run", "--no-backup", "approvals/", "Exit 0"):
        assert needle in text, needle


# --------------------------------------------------------------------------- no database
@pytest.mark.parametrize(
    ("text", "tables", "changes", "opaque"),
    [
        (GOOD, ("public.vehicle_spec_enhancements",), False, False),
        (BAD, ("public.vehicle_spec_enhancements",), True, False),
        ("CREATE POLICY p ON t USING (tenant_id = (SELECT current_setting('x')::uuid));", ("public.t",), False, False),
        ("ALTER TABLE s.t DROP COLUMN c;", ("s.t",), True, False),
        ("DROP TABLE s.gone;", ("s.gone",), True, False),
        ("DO $$ BEGIN UPDATE t SET x = 1; END $$;", (), True, True),
        ("SELECT public.backfill();", (), True, True),
        ("UPDATE a.b SET x = 1 FROM c WHERE c.id = b.id;", ("a.b", "public.c"), True, False),
    ],
)
def test_scope_names_the_tables_and_whether_rows_change(text, tables, changes, opaque):
    from dbguard_pipeline.fixes.apply import scope

    assert scope(text) == type(scope(GOOD))(tables, changes, opaque)


def test_a_crlf_checkout_keeps_its_approval(tmp_path):
    from dbguard_pipeline.fixes import approvals

    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_index", GOOD, GOOD_RB)
    services.approve_migrations(folder, [name], "alice")
    (folder / f"{name}.sql").write_bytes(GOOD.replace("\n", "\r\n").encode())
    (f,) = Runner("postgresql:///unused", folder).files()
    assert approvals.check(folder, f)[1] == ""
    (folder / f"{name}.sql").write_text(GOOD.replace("source", "spec"))
    (f,) = Runner("postgresql:///unused", folder).files()
    assert "approval is void" in approvals.check(folder, f)[1]
