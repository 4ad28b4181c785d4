"""Test fixtures: a real PostgreSQL for every test.

By default the embedded server (pgserver, PostgreSQL 16) in a fresh data directory for the session.
Set DBGUARD_TEST_DSN to a superuser URL of another server (for example a PostgreSQL 15 started by hand)
to run the same suite there. Each test gets its own database, created from a template in ~0.1 s.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

# Dagster steps retry transient connection errors after 10 s, 20 s, 40 s: no waiting in tests (read when the
# code location is imported, so before any test module imports it).
os.environ.setdefault("DBGUARD_RETRY_DELAY_SECONDS", "0")

from dbguard_pipeline.demo import create_demo_database
from dbguard_pipeline.pg.dsn import parse_dsn, with_database
from dbguard_pipeline.pg.embedded import embedded_dsn
from dbguard_pipeline.pg.session import connect  # noqa: E402

DEMO_TEMPLATE = "dbguard_test_demo_template"
SECRET = "s3cr3t-Pa55"  # the password of the password_role fixture: it must never appear in any output
_counter = itertools.count()
_OWN_BASETEMP: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """A temporary folder of this run's own: pytest's default (/tmp/pytest-of-USER/pytest-N) deletes all but
    the three newest runs' folders, which pulls the data directory from under a concurrent run's server."""
    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="dbguard-pytest-")
        _OWN_BASETEMP.append(config.option.basetemp)


def pytest_unconfigure(config):
    for path in _OWN_BASETEMP:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def server_dsn(tmp_path_factory) -> str:
    """Superuser DSN of the server under test (its maintenance database)."""
    external = os.environ.get("DBGUARD_TEST_DSN")
    if external:
        return external
    pgdata = tmp_path_factory.mktemp("pgdata")
    return embedded_dsn("postgres", pgdata)


@pytest.fixture(scope="session")
def pgdata_dir(server_dsn) -> Path:
    with connect(server_dsn) as conn:
        return Path(conn.execute("show data_directory").fetchone()[0])


@pytest.fixture(scope="session")
def demo_template(server_dsn) -> str:
    create_demo_database(server_dsn, DEMO_TEMPLATE, replace=True)
    return DEMO_TEMPLATE


class Databases:
    """Creates throwaway databases on the test server and drops them at the end of the test."""

    def __init__(self, server_dsn: str):
        self.server_dsn = server_dsn
        self.created: list[str] = []

    def create(self, template: str | None = None, name: str | None = None) -> str:
        name = name or f"t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
        with connect(self.server_dsn, autocommit=True) as conn:
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            conn.execute(stmt)
        self.created.append(name)
        return with_database(self.server_dsn, name)

    def drop_all(self) -> None:
        with connect(self.server_dsn, autocommit=True) as conn:
            for name in self.created:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def databases(server_dsn):
    dbs = Databases(server_dsn)
    yield dbs
    dbs.drop_all()


@pytest.fixture
def demo_dsn(databases, demo_template) -> str:
    """A fresh copy of the demo database."""
    return databases.create(template=demo_template)


@pytest.fixture
def empty_dsn(databases) -> str:
    return databases.create()


def run_sql(dsn: str, statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statements)


@pytest.fixture
def password_role(server_dsn, pgdata_dir):
    """A login role that must authenticate with a password (pg_hba rule added for it alone)."""
    hba = pgdata_dir / "pg_hba.conf"
    original = hba.read_text()
    with connect(server_dsn, autocommit=True) as conn:
        conn.execute("drop role if exists dbguard_pw_user")
        conn.execute(sql.SQL("create role dbguard_pw_user login password {}").format(sql.Literal(SECRET)))
        hba.write_text(
            "local all dbguard_pw_user scram-sha-256\nhost all dbguard_pw_user all scram-sha-256\n" + original
        )
        conn.execute("select pg_reload_conf()")
    yield "dbguard_pw_user"
    hba.write_text(original)
    with connect(server_dsn, autocommit=True) as conn:
        conn.execute("select pg_reload_conf()")


def _as_user(server_dsn, user, password, dbname="postgres"):
    p = parse_dsn(server_dsn)
    p.update(user=user, password=password, dbname=dbname)
    return psycopg.conninfo.make_conninfo(**p)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 kB tmpfs (a full disk in a few writes), unmounted afterwards. Mounting needs root: elsewhere the tests
    that need it skip, and the RLIMIT_FSIZE tests cover a full disk without root."""
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    mounted = os.geteuid() == 0 and (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode
        == 0
    )
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
