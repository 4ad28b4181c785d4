"""Faults during backup and restore, on a real PostgreSQL: a killed backend, a full disk, a tampered dump, a
manifest that does not match, a process killed mid-backup. Each ends with the database as it was, a one-line
explanation, and no folder that looks like a valid backup."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from dbguard_pipeline import backup
from dbguard_pipeline.backup.manifest import DUMP, MANIFEST
from dbguard_pipeline.errors import DbguardError

from .conftest import run_sql
from .test_backup import contents, dbguard, folders, one_line_error

pytestmark = pytest.mark.integration


def _dbname(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]


def terminate(server_dsn: str, dbname: str, app: str, query_prefix: str = "") -> int:
    """pg_terminate_backend() of the backends of `app` on `dbname` (whose query starts with query_prefix)."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        return conn.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = %s and application_name = %s"
            " and pid <> pg_backend_pid() and query ilike %s",
            (dbname, app, query_prefix + "%"),
        ).fetchone()[0]


def big_table(dsn: str, rows: int) -> None:
    run_sql(
        dsn,
        f"""create table public.big (id bigint primary key, tenant_id uuid references public.tenants (id),
                                             payload text not null);
                     insert into public.big select g, (select id from public.tenants order by id limit 1),
                            md5(g::text) || md5((g * 7)::text) from generate_series(1, {rows}) g;""",
    )


class Killer(threading.Thread):
    """Terminates the first backend of `app` seen running a query that starts with `prefix`."""

    def __init__(self, server_dsn: str, dbname: str, app: str, prefix: str):
        super().__init__(daemon=True)
        self.args_ = (server_dsn, dbname, app, prefix)
        self.killed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and not self.killed and time.monotonic() < deadline:
            self.killed = terminate(*self.args_)
            time.sleep(0.01)


def _run_and_kill(cmd: list[str], killer: Killer) -> subprocess.CompletedProcess:
    killer.start()
    try:
        proc = dbguard(*cmd)
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed == 1, (proc.returncode, proc.stdout, proc.stderr)
    return proc


# --------------------------------------------------------------------------- killed backends
def test_backend_killed_during_backup_leaves_no_backup(demo_dsn, server_dsn, tmp_path):
    killed = []

    def hook(line: str) -> None:  # after the counts, before pg_dump uses the exported snapshot
        if line.startswith("dumping"):
            killed.append(terminate(server_dsn, _dbname(demo_dsn), "dbguard backup"))

    with pytest.raises(DbguardError) as err:
        backup.take(demo_dsn, ["public.vehicles", "public.tenants"], out_dir=tmp_path, log=hook)
    assert killed == [1]
    assert "lost the connection to the database during the backup" in str(err.value)
    assert "\n" not in str(err.value) and err.value.exit_code == 2
    assert folders(tmp_path) == []


def test_pg_dump_backend_killed_cli(demo_dsn, server_dsn, tmp_path):
    big_table(demo_dsn, 400_000)
    killer = Killer(server_dsn, _dbname(demo_dsn), "dbguard backup (pg_dump)", "COPY")
    proc = _run_and_kill(["backup", "--dsn", demo_dsn, "--out-dir", str(tmp_path), "--table", "public.big"], killer)
    one_line_error(proc, "pg_dump failed")
    assert folders(tmp_path) == []


def test_backend_killed_during_restore_changes_nothing(demo_dsn, server_dsn, tmp_path):
    b = backup.take(demo_dsn, ["public.tenants", "public.vehicles"], out_dir=tmp_path)
    run_sql(demo_dsn, "update public.vehicles set make = 'Changed'; update public.tenants set name = 'Changed'")
    before = contents(demo_dsn)
    killed = []

    def hook(line: str) -> None:  # after the foreign keys were dropped and the tables emptied
        if line.startswith("emptied"):
            killed.append(terminate(server_dsn, _dbname(demo_dsn), "dbguard restore"))

    with pytest.raises(DbguardError) as err:
        backup.restore(b.path, demo_dsn, verify=True, log=hook)
    assert killed == [1] and "lost the connection" in str(err.value) and "nothing was changed" in str(err.value)
    assert contents(demo_dsn) == before  # rows, foreign keys and triggers as they were


def test_backend_killed_while_loading_rows_cli(demo_dsn, server_dsn, tmp_path):
    big_table(demo_dsn, 400_000)
    b = backup.take(demo_dsn, ["public.big"], out_dir=tmp_path)
    run_sql(demo_dsn, "delete from public.big where id % 2 = 0")
    before = contents(demo_dsn)
    killer = Killer(server_dsn, _dbname(demo_dsn), "dbguard restore", "COPY")
    proc = _run_and_kill(["restore", str(b.path), "--dsn", demo_dsn, "--verify"], killer)
    one_line_error(proc, "lost the connection", "nothing was changed")
    assert contents(demo_dsn) == before


def test_process_killed_mid_backup_leaves_only_a_partial_folder(demo_dsn, server_dsn, tmp_path):
    big_table(demo_dsn, 400_000)
    env = {k: v for k, v in os.environ.items() if k != "DBGUARD_DATABASE_URL"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dbguard_pipeline.cli",
            "backup",
            "--dsn",
            demo_dsn,
            "--out-dir",
            str(tmp_path),
            "--table",
            "public.big",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".partial-") for p in tmp_path.glob(".partial-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # dbguard and its pg_dump, as a crash or an OOM kill would
    proc.wait()
    assert [p.name[:9] for p in tmp_path.iterdir()] == [".partial-"]
    assert backup.list_backups(tmp_path) == []
    listed = dbguard("backup", "list", "--out-dir", str(tmp_path))
    assert listed.returncode == 0 and listed.stdout.startswith("no backups")
    one_line_error(dbguard("restore", str(next(tmp_path.iterdir())), "--dsn", demo_dsn), "not a backup")
    [partial] = tmp_path.iterdir()
    old = time.time() - 3 * 86400
    for p in [*partial.rglob("*"), partial]:
        os.utime(p, (old, old))
    backup.take(demo_dsn, ["public.tenants"], out_dir=tmp_path)
    backup.prune(tmp_path, keep=5)  # removes the stale partial folder, keeps the backup
    assert len(folders(tmp_path)) == 1 and not folders(tmp_path)[0].startswith(".")


# --------------------------------------------------------------------------- a full disk
def _incompressible(dsn: str, rows: int = 20_000) -> None:
    run_sql(
        dsn,
        f"create table public.noise as select g as id, md5(random()::text) || md5(random()::text) as v "
        f"from generate_series(1, {rows}) g",
    )


def test_full_disk_tmpfs(demo_dsn, tmp_path, tiny_tmpfs):
    mnt = tiny_tmpfs
    _incompressible(demo_dsn)
    with pytest.raises(DbguardError) as err:
        backup.take(demo_dsn, ["public.noise"], out_dir=mnt)
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    assert folders(mnt) == []


def test_file_size_limit_cli(demo_dsn, tmp_path):
    _incompressible(demo_dsn)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    proc = dbguard("backup", "--dsn", demo_dsn, "--out-dir", str(tmp_path), "--table", "noise", preexec_fn=limit)
    one_line_error(proc, "pg_dump")
    assert folders(tmp_path) == []


# --------------------------------------------------------------------------- tampering and mismatches
def test_tampered_or_truncated_dump_is_refused(demo_dsn, tmp_path):
    b = backup.take(demo_dsn, ["public.vehicles"], out_dir=tmp_path)
    run_sql(demo_dsn, "update public.vehicles set make = 'Changed'")
    before = contents(demo_dsn)
    dump = b.path / DUMP
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    for extra in ([], ["--verify"], ["--into-scratch"]):
        one_line_error(dbguard("restore", str(b.path), "--dsn", demo_dsn, *extra), "refusing to restore", "sha256")
    dump.write_bytes(bytes(data[:-100]))
    one_line_error(dbguard("restore", str(b.path / MANIFEST), "--dsn", demo_dsn), "sha256")
    dump.unlink()
    one_line_error(dbguard("restore", str(b.path), "--dsn", demo_dsn), "dump file is missing")
    assert contents(demo_dsn) == before
    assert "INVALID" in dbguard("backup", "list", "--out-dir", str(tmp_path)).stdout


def test_manifest_mismatch_exits_1_naming_the_table_and_rolls_back(demo_dsn, tmp_path):
    b = backup.take(demo_dsn, ["public.tenants", "public.vehicles"], out_dir=tmp_path)
    run_sql(demo_dsn, "update public.vehicles set make = 'Changed'")
    before = contents(demo_dsn)
    manifest = json.loads((b.path / MANIFEST).read_text())
    manifest["tables"][1]["checksum"] = "0" * 32  # public.vehicles
    (b.path / MANIFEST).write_text(json.dumps(manifest))
    proc = dbguard("restore", str(b.path), "--dsn", demo_dsn, "--verify")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("public.vehicles: MISMATCH: checksum") for ln in lines), proc.stdout
    assert not any(ln.startswith("public.tenants") for ln in lines)
    assert "rolled back: nothing was changed" in proc.stdout and "1 table of 2 differ" in proc.stdout
    assert contents(demo_dsn) == before
    scratch = dbguard("restore", str(b.path), "--dsn", demo_dsn, "--into-scratch", "--format", "json")
    assert scratch.returncode == 1
    report = json.loads(scratch.stdout)
    assert [t["name"] for t in report["tables"] if not t["ok"]] == ["vehicles"]
    assert "VERIFICATION FAILED" in dbguard("backup", "list", "--out-dir", str(tmp_path)).stdout
    assert contents(demo_dsn) == before


def test_mismatched_row_count_in_manifest_is_caught_without_verify(demo_dsn, tmp_path):
    b = backup.take(demo_dsn, ["public.tenants"], out_dir=tmp_path)
    run_sql(demo_dsn, "update public.tenants set name = 'Changed'")
    before = contents(demo_dsn)
    manifest = json.loads((b.path / MANIFEST).read_text())
    manifest["tables"][0]["rows"] += 1
    (b.path / MANIFEST).write_text(json.dumps(manifest))
    one_line_error(dbguard("restore", str(b.path), "--dsn", demo_dsn), "loaded 3 rows", "nothing was changed")
    assert contents(demo_dsn) == before


def test_locked_table_gives_up_after_the_lock_timeout(demo_dsn, tmp_path):
    b = backup.take(demo_dsn, ["public.tenants"], out_dir=tmp_path)
    with psycopg.connect(demo_dsn) as holder:
        holder.execute("lock table public.tenants in access share mode")
        proc = dbguard("restore", str(b.path), "--dsn", demo_dsn, "--lock-timeout", "0.5")
        holder.rollback()
    one_line_error(proc, "lock timeout", "nothing was changed")
    assert Path(b.path / MANIFEST).exists()
