"""Issue #13, items 8 and 12: ``migrate up`` and ``generate-migration`` against a real hot standby (a
streaming replica made with pg_basebackup from a dedicated embedded server): one line, exit 2, never a
traceback; nothing changes on the primary."""
from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

import psycopg
import pytest

from dbguard_pipeline.cli import main
from dbguard_pipeline.demo import create_demo_database
from dbguard_pipeline.pg.dsn import with_database

from .test_runner_faults import OwnServer

STANDBY_PORT = "5433"


class Standby:
    def __init__(self, primary: OwnServer, root: Path):
        from pgserver._commands import pg_basebackup

        self.primary = primary
        self.user = primary.srv.system_user
        self.data = root / "standby"
        self.data.mkdir(mode=0o700)
        if self.user:
            from pgserver.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data)
            entry = pwd.getpwnam(self.user)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        host = psycopg.conninfo.conninfo_to_dict(primary.dsn)["host"]
        pg_basebackup(["-D", str(self.data), "-R", "-X", "stream", "-c", "fast", "-h", host, "-U", "postgres"], user=self.user,
                      timeout=300)
        self._pg_ctl("-w", "-l", str(self.data / "log"), "-o", f"-h '' -k {self.data} -p {STANDBY_PORT}", "start")
        self.dsn = f"host={self.data} port={STANDBY_PORT} user=postgres dbname=app"

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.data, user=self.user, timeout=120)

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")


@pytest.fixture(scope="module")
def standby(tmp_path_factory):
    primary = OwnServer(tmp_path_factory.mktemp("primarypg"))
    create_demo_database(primary.dsn, "app", replace=True)
    s = Standby(primary, tmp_path_factory.mktemp("standbypg"))
    try:
        with psycopg.connect(s.dsn) as conn:
            assert conn.execute("select pg_is_in_recovery()").fetchone()[0]
        yield s
    finally:
        s.stop()
        shutil.rmtree(s.data, ignore_errors=True)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.integration
def test_migrate_up_on_a_hot_standby_is_one_line(standby, tmp_path, capsys):
    (tmp_path / "20250101000000_one.sql").write_text("create table one (id int);\n")
    assert main(["migrate", "up", "--dsn", standby.dsn, "--dir", str(tmp_path)]) == 2
    assert "hot standby" in _one_line(capsys)
    assert main(["migrate", "status", "--dsn", standby.dsn, "--dir", str(tmp_path)]) == 0  # reading is fine
    assert "pending  20250101000000_one" in capsys.readouterr().out
    with psycopg.connect(with_database(standby.primary.dsn, "app")) as conn:
        assert conn.execute("select to_regclass('dbguard.schema_migrations') is null").fetchone()[0]


@pytest.mark.integration
def test_generate_migration_on_a_hot_standby(standby, tmp_path, capsys):
    out = tmp_path / "m"
    # --test: the round trip is required and cannot run on a standby: one line, exit 2, nothing written
    assert main(["generate-migration", "--all", "--dsn", standby.dsn, "--out-dir", str(out), "--test"]) == 2
    assert "cannot create a scratch database" in _one_line(capsys)
    assert not out.exists() or not list(out.iterdir())
    # default: the round trip is skipped with its reason; the files (read from the standby) are written
    assert main(["generate-migration", "--all", "--dsn", standby.dsn, "--out-dir", str(out)]) == 0
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err and "read-only" in printed.out + printed.err
    assert len(list(out.glob("*.sql"))) > 0
