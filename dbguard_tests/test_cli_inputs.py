"""What the CLI does with what users hand it: --out on links, devices and FIFOs; empty database URLs; bad config
values. Each bad input is one line on stderr and exit 2, never a traceback, never the wrong target."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading

import pytest

from .test_cli_foundation import assert_one_line_error, dbguard

pytestmark = pytest.mark.security


def test_out_through_a_symlink_writes_the_target_and_keeps_the_link(demo_dsn, tmp_path):
    real = tmp_path / "real-report.json"
    real.write_text("{}")
    link = tmp_path / "latest.json"
    link.symlink_to(real.name)
    proc = dbguard("validate", "--dsn", demo_dsn, "--no-data", "--format", "json", "--out", str(link))
    assert proc.returncode == 1, proc.stderr  # the demo has critical findings
    assert link.is_symlink() and os.readlink(link) == real.name
    assert json.loads(real.read_text())["summary"]["critical"] == 2


def test_out_to_a_dangling_symlink_creates_its_target(demo_dsn, tmp_path):
    link = tmp_path / "snap.json"
    link.symlink_to("made-by-dbguard.json")
    proc = dbguard("introspect", "--dsn", demo_dsn, "--out", str(link))
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink()
    assert json.loads((tmp_path / "made-by-dbguard.json").read_text())["tables"]


def test_new_files_get_the_umask_mode_and_replaced_files_keep_theirs(demo_dsn, tmp_path):
    new = tmp_path / "new.json"
    old_mask = os.umask(0o027)
    try:
        proc = dbguard("introspect", "--dsn", demo_dsn, "--out", str(new))
    finally:
        os.umask(old_mask)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    kept.chmod(0o604)
    proc = dbguard("introspect", "--dsn", demo_dsn, "--out", str(kept))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(kept.stat().st_mode) == 0o604 and kept.read_text() != "old"


def test_out_to_a_fifo_writes_into_it(demo_dsn, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    proc = dbguard("introspect", "--dsn", demo_dsn, "--out", str(fifo))
    reader.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert json.loads(received[0])["database"]


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root (CI and this machine run as root)")
def test_out_to_a_device_node_writes_into_it_and_leaves_the_device(demo_dsn, tmp_path):
    null = tmp_path / "null"
    subprocess.run(["mknod", "-m", "666", str(null), "c", "1", "3"], check=True)
    proc = dbguard("introspect", "--dsn", demo_dsn, "--out", str(null))
    assert proc.returncode == 0, proc.stderr
    st = null.lstat()
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666


def test_out_naming_a_directory_is_one_line(demo_dsn, tmp_path):
    assert_one_line_error(dbguard("introspect", "--dsn", demo_dsn, "--out", str(tmp_path)), "is a directory")


@pytest.mark.parametrize(
    "command",
    [
        ["validate", "--no-data"],
        ["introspect"],
        ["test-isolation"],
        ["migrate", "status"],
        ["generate-migration", "--all", "--dry-run"],
    ],
)
def test_an_empty_dsn_is_a_usage_error_not_the_demo_database(command, tmp_path):
    proc = dbguard(*command, "--dsn", "", env={"DBGUARD_HOME": str(tmp_path / "home")})
    assert_one_line_error(proc, "--dsn is empty")
    assert not (tmp_path / "home").exists()  # the embedded server was never started


def test_an_empty_database_url_variable_is_a_usage_error(tmp_path):
    proc = dbguard("validate", "--no-data", env={"DBGUARD_DATABASE_URL": "", "DBGUARD_HOME": str(tmp_path / "home")})
    assert_one_line_error(proc, "DBGUARD_DATABASE_URL is set but empty")
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("statement_timeout_ms: -5\n", "statement_timeout_ms: must be a positive number"),
        ("lock_timeout_ms: 0\n", "lock_timeout_ms: must be a positive number"),
        ("sample_percent: 0\n", "sample_percent: must be more than 0"),
        ("tenant_index_min_rows: -1\n", "tenant_index_min_rows: must be 0 or more"),
    ],
)
def test_bad_config_values_are_one_line(text, needle, demo_dsn, tmp_path):
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text(text)
    assert_one_line_error(dbguard("validate", "--dsn", demo_dsn, "--config", str(cfg)), needle)


def test_a_config_file_that_is_not_utf8_is_one_line(demo_dsn, tmp_path):
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_bytes(b"tenant:\n  column: \xff\xfe\n")
    assert_one_line_error(dbguard("validate", "--dsn", demo_dsn, "--config", str(cfg)), "is not UTF-8 text")


def test_a_configured_schema_that_does_not_exist_is_one_line_not_a_pass(demo_dsn, tmp_path):
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text("schemas: [nosuch]\n")
    assert_one_line_error(dbguard("validate", "--dsn", demo_dsn, "--config", str(cfg)), "schema not found", "nosuch")
    assert_one_line_error(dbguard("test-isolation", "--dsn", demo_dsn, "--config", str(cfg)), "schema not found")


def test_a_single_fix_after_all_respects_the_pending_migration(demo_dsn, tmp_path):
    out = tmp_path / "m"
    first = dbguard("generate-migration", "--all", "--dsn", demo_dsn, "--out-dir", str(out), "--no-test")
    assert first.returncode == 0, first.stderr
    written = sorted(p.name for p in out.glob("*.sql"))
    again = dbguard("generate-migration", "fix-rls-policy", "public.profiles", "--dsn", demo_dsn, "--out-dir", str(out))
    assert again.returncode == 0, again.stderr
    assert "fix_rls_policy_profiles" in again.stdout and "is pending" in again.stdout
    assert sorted(p.name for p in out.glob("*.sql")) == written  # no duplicate to fail on "already exists"
    up = dbguard("migrate", "up", "--dsn", demo_dsn, "--dir", str(out))
    assert up.returncode == 0, up.stderr
