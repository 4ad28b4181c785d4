"""Faults inside dbguard fix (issue 16), on a real PostgreSQL (a copy of the demo): the backup failing (a full
disk for the backup folder, the backup's backend killed), the restore after a rollback failing (a tampered
dump, a manifest its rows do not match, the backend killed during the restore), and the backend killed
during the live verification. Each ends with the database as the step left it (the schema compared with
model.equality.comparable, every table's rows with the backup's checksums), one line, a failed exit or
outcome, and the next run saying what happened."""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from dbguard_pipeline import services
from dbguard_pipeline.backup import checksum as cks
from dbguard_pipeline.backup.manifest import DUMP, MANIFEST
from dbguard_pipeline.config import Config
from dbguard_pipeline.fixes.ledger import applied_names
from dbguard_pipeline.model.equality import comparable
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.session import read_only_session

from .conftest import run_sql
from .test_backup import dbguard, folders
from .test_fix_approval import BAD, BAD_RB, GOOD, GOOD_RB, TABLE, fix, outcome_rows, rls_enabled, write

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DBGUARD_HOME", str(tmp_path / "home"))


State = tuple[Snapshot, dict[str, tuple[int, str]]]


def state(dsn: str) -> State:
    """The schema (without dbguard's own schema, column positions kept) and every table's row count and
    checksum (the backup's checksum, under its pinned settings)."""
    schema = comparable(introspect(dsn), ("dbguard",), positions=True)
    rows = {}
    with read_only_session(dsn, statement_timeout_ms=0, settings=cks.SETTINGS) as ro:
        for t in cks.all_tables(ro):
            if t.schema != "dbguard":
                rows[t.qualified] = cks.checksum(ro, t, cks.columns(ro, t.oid))
    return schema, rows


def terminate_app(dsn: str, app: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = current_database()"
            " and application_name = %s and pid <> pg_backend_pid()",
            (app,),
        ).fetchone()[0]


def one_outcome_line(proc: subprocess.CompletedProcess, outcome: str, name: str) -> str:
    """The run failed (exit 1, no traceback) and its outcome is one line."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith(f"{outcome} ")]
    assert len(lines) == 1 and name in lines[0], proc.stdout
    return lines[0]


def next_run(dsn: str, folder: Path, *needles: str) -> str:
    nxt = fix(dsn, folder, "--dry-run")
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    for n in needles:
        assert n in nxt.stdout, (n, nxt.stdout)
    return nxt.stdout


# --------------------------------------------------------------------------- the backup fails
NOISE = "UPDATE public.noise SET v = 'overwritten';\n"
NOISE_RB = "SELECT 1;\n"


def _noise(dsn: str) -> None:
    """A table whose dump is larger than the limits below (incompressible rows)."""
    run_sql(
        dsn,
        "create table public.noise as select g as id, md5(random()::text) || md5(random()::text) as v "
        "from generate_series(1, 20000) g",
    )


def _check_backup_failed(dsn: str, folder: Path, name: str, before: State, backups: Path, line: str) -> None:
    assert "the backup failed, nothing was applied" in line
    assert state(dsn) == before and applied_names(dsn) == set()
    assert [f for f in folders(backups) if not f.startswith(".")] == []
    (row,) = outcome_rows(dsn)
    assert row[:2] == (name, "failed") and row[2].startswith("the backup failed") and row[4] is False
    # the next run says what happened, and tries again (nothing got worse: the approval holds)
    next_run(dsn, folder, "last attempt: failed", "the backup failed, nothing was applied", "would apply")


def test_a_file_size_limit_on_the_backup_stops_fix_before_the_apply(demo_dsn, tmp_path):
    _noise(demo_dsn)
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_noise", NOISE, NOISE_RB)
    services.approve_migrations(folder, [name], "alice")
    before = state(demo_dsn)

    def limit() -> None:  # pg_dump (a child) inherits it: its dump cannot grow past 200 kB
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    proc = fix(demo_dsn, folder, preexec_fn=limit)
    line = one_outcome_line(proc, "failed", name)
    assert "pg_dump" in line
    _check_backup_failed(demo_dsn, folder, name, before, tmp_path / "home" / "backups", line)


def test_a_full_disk_for_the_backup_folder_stops_fix_before_the_apply(demo_dsn, tmp_path, tiny_tmpfs):
    mnt = tiny_tmpfs
    _noise(demo_dsn)
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_noise", NOISE, NOISE_RB)
    services.approve_migrations(folder, [name], "alice")
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text(f"backup_dir: {mnt}\n")
    before = state(demo_dsn)
    proc = fix(demo_dsn, folder, "--config", str(cfg))
    line = one_outcome_line(proc, "failed", name)
    assert "No space left on device" in line
    _check_backup_failed(demo_dsn, folder, name, before, mnt, line)


def test_the_backend_killed_during_the_backup_stops_fix_before_the_apply(demo_dsn, tmp_path):
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_break_isolation", BAD, BAD_RB)
    services.approve_migrations(folder, [name], "alice")
    before = state(demo_dsn)
    killed = []

    def hook(line: str) -> None:  # after the counts, before pg_dump imports the exported snapshot
        if line.startswith("dumping"):
            killed.append(terminate_app(demo_dsn, "dbguard backup"))

    backups = tmp_path / "backups"
    run = services.apply_approved(demo_dsn, Config(backup_dir=str(backups)), folder, log=hook)
    assert killed == [1]
    (o,) = run.outcomes
    assert o.outcome == "failed" and o.bad and "lost the connection" in o.reason, o.line()
    assert "\n" not in o.line() and o.alerts == ["log: sent"]
    _check_backup_failed(demo_dsn, folder, name, before, backups, o.line())


def _children_named(parent: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and Path(argv0).name == name:
            found.append(int(entry.name))
    return found


def test_pg_dump_killed_during_the_backup_stops_fix_before_the_apply(demo_dsn, tmp_path):
    import signal
    import sys

    from .test_backup_faults import big_table

    big_table(demo_dsn, 400_000)
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_big", "UPDATE public.big SET payload = 'x';\n", "SELECT 1;\n")
    services.approve_migrations(folder, [name], "alice")
    before = state(demo_dsn)
    env = {k: v for k, v in os.environ.items() if k != "DBGUARD_DATABASE_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dbguard_pipeline.cli", "fix", "--dsn", demo_dsn, "--dir", str(folder)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    killed = []
    deadline = time.monotonic() + 120
    while not killed and proc.poll() is None and time.monotonic() < deadline:
        for pid in _children_named(proc.pid, "pg_dump"):
            os.kill(pid, signal.SIGKILL)  # as the OOM killer would
            killed.append(pid)
        time.sleep(0.005)
    out, err = proc.communicate(timeout=300)
    assert killed, "pg_dump was never seen running"
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    line = one_outcome_line(done, "failed", name)
    assert "pg_dump" in line and "SIGKILL" in line, line
    _check_backup_failed(demo_dsn, folder, name, before, tmp_path / "home" / "backups", line)


# --------------------------------------------------------------------------- the restore after a rollback fails
def _flip_dump(folder: Path) -> None:
    dump = folder / DUMP
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))


def _wrong_checksum(folder: Path) -> None:
    import json

    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["tables"][0]["checksum"] = "0" * 32
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("tampered dump", "sha256"),
        ("manifest does not match", "failed its verification and was rolled back"),
        ("backend killed during the restore", "lost the connection"),
    ],
)
def test_a_restore_that_fails_after_the_rollback_is_recorded_alerted_and_changes_nothing(
    demo_dsn, tmp_path, fault, says
):
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_break_isolation", BAD, BAD_RB)
    services.approve_migrations(folder, [name], "mallory")
    backups = tmp_path / "backups"
    before = state(demo_dsn)
    done = []

    def hook(line: str) -> None:
        if fault != "backend killed during the restore" and line.endswith(": rolling back"):
            (bk,) = [p for p in backups.iterdir() if not p.name.startswith(".")]
            (_flip_dump if fault == "tampered dump" else _wrong_checksum)(bk)  # between the backup and the restore
            done.append(fault)
        if fault == "backend killed during the restore" and line.startswith("emptied"):
            done.append(terminate_app(demo_dsn, "dbguard restore"))

    run = services.apply_approved(demo_dsn, Config(backup_dir=str(backups)), folder, log=hook)
    assert len(done) == 1 and done[0], done
    (o,) = run.outcomes
    line = o.line()
    assert o.outcome == "rollback_failed" and says in o.reason and "\n" not in line, line
    assert (
        "rolled back" in o.reason
        and "as the migration and its rollback left them (not restored)" in o.reason
        and "a person must look" in line
    )
    assert o.alerts == ["log: sent"] and o.data_restored is False and o.backup
    # the rollback ran (RLS back on, the ledger does not list it) and the failed restore changed nothing: the
    # schema is as before, every other table's rows too; the migrated table holds the rows the migration wrote
    after = state(demo_dsn)
    assert after[0] == before[0] and rls_enabled(demo_dsn) and applied_names(demo_dsn) == set()
    assert {k: v for k, v in after[1].items() if k != TABLE} == {k: v for k, v in before[1].items() if k != TABLE}
    with psycopg.connect(demo_dsn) as conn:
        rows, other = conn.execute(
            f"select count(*), count(*) filter (where source is distinct from 'overwritten') from {TABLE}"
        ).fetchone()
    assert rows == before[1][TABLE][0] and other == 0
    rows_ = outcome_rows(demo_dsn)
    assert [r[:2] for r in rows_] == [(name, "rollback_failed")] and rows_[0][4] is True and rows_[0][5] is False
    # the next run says what happened and does not try the same text again
    next_run(demo_dsn, folder, "last attempt: rollback_failed", says, "a person must look", "change the file")
    if fault == "backend killed during the restore":
        # the backup itself is intact: restoring it by hand returns the database exactly to before
        back = dbguard("restore", str(o.backup), "--dsn", demo_dsn, "--verify")
        assert back.returncode == 0, back.stdout + back.stderr
        assert state(demo_dsn) == before


def test_through_the_cli_a_refused_restore_exits_1_with_one_outcome_line(demo_dsn, tmp_path):
    """The dump is tampered by a concurrent process while the migration is applied and verified."""
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_break_isolation", BAD, BAD_RB)
    services.approve_migrations(folder, [name], "mallory")
    backups = tmp_path / "home" / "backups"
    stop, flipped = threading.Event(), []

    def tamper() -> None:  # as soon as the backup folder is complete (renamed from .partial-*)
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            done = [p for p in backups.iterdir() if not p.name.startswith(".")] if backups.exists() else []
            if done:
                _flip_dump(done[0])
                flipped.append(done[0])
                return
            time.sleep(0.005)

    t = threading.Thread(target=tamper, daemon=True)
    t.start()
    try:
        proc = fix(demo_dsn, folder)
    finally:
        stop.set()
        t.join()
    assert flipped
    line = one_outcome_line(proc, "rollback_failed", name)
    assert "sha256" in line and "as the migration and its rollback left them (not restored)" in line
    assert "alert log: sent" in proc.stdout
    assert rls_enabled(demo_dsn) and applied_names(demo_dsn) == set()


# --------------------------------------------------------------------------- the verification fails
def test_the_backend_killed_during_the_verification_rolls_the_migration_back(demo_dsn, tmp_path):
    folder = tmp_path / "migrations"
    name = write(folder, "20260101000000_index", GOOD, GOOD_RB)
    services.approve_migrations(folder, [name], "alice")
    before = state(demo_dsn)
    killed: list[int] = []
    threads: list[threading.Thread] = []

    def hold_and_kill() -> None:
        # the table is locked before the verification starts: its first statement on the table waits, and the
        # backend waiting is terminated (then the lock is released so the rollback can run)
        with psycopg.connect(demo_dsn) as holder:
            holder.execute(f"lock table {TABLE} in access exclusive mode")
            ready.set()
            deadline = time.monotonic() + 60
            with psycopg.connect(demo_dsn, autocommit=True) as watcher:
                while not killed and time.monotonic() < deadline:
                    row = watcher.execute(
                        "select pid from pg_stat_activity where datname = current_database() and pid <> %s"
                        " and wait_event_type = 'Lock' and backend_type = 'client backend'"
                        " and application_name like 'dbguard%%' and application_name <> 'dbguard migrate'",
                        (holder.info.backend_pid,),
                    ).fetchone()
                    if row:
                        watcher.execute("select pg_terminate_backend(%s)", (row[0],))
                        killed.append(row[0])
                    time.sleep(0.005)
            holder.rollback()

    ready = threading.Event()

    def hook(line: str) -> None:
        if line.startswith(f"applied {name} in"):
            t = threading.Thread(target=hold_and_kill, daemon=True)
            threads.append(t)
            t.start()
            assert ready.wait(30)

    run = services.apply_approved(demo_dsn, Config(), folder, log=hook)
    for t in threads:
        t.join()
    assert killed, "no backend of the verification was seen waiting"
    (o,) = run.outcomes
    line = o.line()
    assert o.outcome == "failed" and o.bad and "\n" not in line, line
    assert "could not verify after applying" in o.reason and "rolled back" in o.reason
    assert "the database is as it was before" in o.reason and o.alerts == ["log: sent"]
    assert state(demo_dsn) == before and applied_names(demo_dsn) == set()  # the index is gone again
    (row,) = outcome_rows(demo_dsn)
    assert row[:2] == (name, "failed") and "could not verify" in row[2]
    # the next run says it and tries again (nothing was judged worse)
    next_run(demo_dsn, folder, "last attempt: failed", "could not verify after applying", "would apply")
