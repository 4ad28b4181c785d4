"""The runner under real faults (issue #13, item 5): the backend terminated (pg_terminate_backend from another
connection), SIGTERM and SIGKILL sent to a real ``dbguard migrate up`` process, the server restarted
(``pg_ctl restart -m immediate``) or stopped until the runner gives up, each at a transactional step and at a
``CREATE INDEX CONCURRENTLY`` step. The fault hits step 4 of 5, reached through a rendezvous: the step waits
for an advisory lock (transactional step) or for an older snapshot (the CONCURRENTLY build) that the test holds.

Each case checks that the database is as before, fully applied, or half-applied exactly as the ledger
records; that ``status`` says which; and that the next ``up`` succeeds the first time and leaves it fully
applied. The fault matrix in docs/migrations.md is :func:`render_matrix` of :data:`CASES` (a test keeps them
equal): ``python -m dbguard_tests.test_runner_faults`` prints it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dbguard_pipeline.errors import MigrationError
from dbguard_pipeline.fixes.ledger import Runner
from dbguard_pipeline.pg.dsn import with_database

ROOT = Path(__file__).resolve().parents[1]
NAME = "20250101000000_isolate_items"
LOCK_KEY = 4242
TOTAL = 5

HEAD = """SET statement_timeout = '5min';
BEGIN;
ALTER TABLE items ADD COLUMN tenant_id integer;
COMMIT;
BEGIN;
UPDATE items SET tenant_id = 1;
ALTER TABLE items ALTER COLUMN tenant_id SET NOT NULL;
COMMIT;
"""
RLS = "ALTER TABLE items ENABLE ROW LEVEL SECURITY;\nCREATE POLICY items_tenant ON items USING (tenant_id = 1);\n"
FORWARD = {
    "tx": HEAD + f"BEGIN;\nSELECT pg_advisory_xact_lock({LOCK_KEY});\n{RLS}COMMIT;\n"
    "BEGIN;\nCREATE TABLE items_done (id int);\nCOMMIT;\n",
    "concurrently": HEAD + "CREATE INDEX CONCURRENTLY items_tenant_idx ON items (tenant_id);\n"
    f"BEGIN;\n{RLS}CREATE TABLE items_done (id int);\nCOMMIT;\n",
}
ROLLBACK = """DROP TABLE IF EXISTS items_done;
DROP POLICY IF EXISTS items_tenant ON items;
ALTER TABLE items DISABLE ROW LEVEL SECURITY;
DROP INDEX CONCURRENTLY IF EXISTS items_tenant_idx;
ALTER TABLE items DROP COLUMN IF EXISTS tenant_id;
"""


@dataclass(frozen=True)
class Case:
    fault: str  # terminate | sigterm | sigkill | restart | outage
    step: str  # tx | concurrently
    state_after: str  # what the database looks like once the runner has stopped
    status_says: str
    what_to_run: str


AS_BEFORE = "as before (the rollback file was applied)"
HALF = "half-applied at step 3 of 5, as the ledger records"
RUN_UP = "`dbguard migrate up` (applies it)"


def RESUME(how: str = "") -> str:  # noqa: N802
    return f"`dbguard migrate up` (resumes at step 4{how}) or `dbguard migrate rollback NAME` (undoes steps 1-3)"


FAULTS = {
    "terminate": "backend terminated (`pg_terminate_backend`)",
    "sigterm": "SIGTERM to `dbguard migrate up`",
    "sigkill": "SIGKILL to `dbguard migrate up`",
    "restart": "server restart (`pg_ctl restart -m immediate`)",
    "outage": "server down longer than the runner waits (30 s)",
}
CASES = [
    Case("terminate", "tx", AS_BEFORE, "pending", RUN_UP),
    Case("terminate", "concurrently", AS_BEFORE + "; the INVALID index dropped", "pending", RUN_UP),
    Case("sigterm", "tx", AS_BEFORE, "pending", RUN_UP),
    Case("sigterm", "concurrently", AS_BEFORE + "; the INVALID index dropped", "pending", RUN_UP),
    Case("restart", "tx", AS_BEFORE + " once the server was back", "pending", RUN_UP),
    Case(
        "restart", "concurrently", AS_BEFORE + " once the server was back; the INVALID index dropped", "pending", RUN_UP
    ),
    Case("outage", "tx", HALF, "HALF-APPLIED at step 3 of 5", RESUME()),
    Case(
        "outage",
        "concurrently",
        HALF + "; step 4 left an INVALID index",
        "HALF-APPLIED at step 3 of 5; step 4 left the index INVALID",
        RESUME(": drops the INVALID index and builds it again"),
    ),
    Case("sigkill", "tx", HALF, "HALF-APPLIED at step 3 of 5", RESUME()),
    Case(
        "sigkill",
        "concurrently",
        HALF + "; the orphaned session finished the index build",
        "HALF-APPLIED at step 3 of 5; step 4's index was built",
        RESUME(": records the index without building it again"),
    ),
]


def render_matrix(cases=CASES) -> str:
    lines = ["| fault | at step 4 of 5 | state after | `migrate status` says | what to run |", "|---|---|---|---|---|"]
    for c in cases:
        step = "transactional" if c.step == "tx" else "`CREATE INDEX CONCURRENTLY`"
        lines.append(f"| {FAULTS[c.fault]} | {step} | {c.state_after} | {c.status_says} | {c.what_to_run} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the server and its faults
class OwnServer:
    """A dedicated embedded server: these tests restart and stop it."""

    def __init__(self, pgdata: Path):
        from dbguard_pipeline.pg.embedded import embedded_dsn, embedded_server

        self.dsn = embedded_dsn("postgres", pgdata)
        self.srv = embedded_server(pgdata)
        self.opts = (Path(self.srv.pgdata) / "postmaster.opts").read_text()

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.srv.pgdata, user=self.srv.system_user, timeout=120)

    def restart(self) -> None:
        self._pg_ctl("-w", "-m", "immediate", "restart")

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "immediate", "stop")

    def start(self) -> None:
        # postmaster.opts: the postgres command line pgserver started (socket directory, no TCP)
        import shlex

        argv = shlex.split(self.opts)[1:]
        self._pg_ctl("-w", "-l", str(Path(self.srv.pgdata) / "log"), "-o", shlex.join(argv), "start")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = with_database(self.dsn, name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "create table items (id int primary key, note text);"
                "insert into items select g, 'n' || g from generate_series(1, 200) g"
            )
        return dsn


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    return OwnServer(tmp_path_factory.mktemp("faultpg"))


def _runner_backend(dsn: str, timeout: float = 60.0) -> int:
    """The pid of the runner's session once it waits at the rendezvous (step 4)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "select pid from pg_stat_activity where datname = current_database() and "
                "application_name = 'dbguard migrate' and wait_event_type = 'Lock' and "
                "(query ilike '%pg_advisory_xact_lock%' or query ilike 'create index%')"
            ).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError("the runner never reached the rendezvous at step 4")


def _wait_gone(dsn: str, pid: int | None = None, timeout: float = 60.0, waiting_only: bool = False) -> None:
    """Until the session ``pid`` (or every runner session) has left the database (``waiting_only``: has
    stopped waiting at the rendezvous)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if pid is not None:
                row = conn.execute(
                    "select count(*) from pg_stat_activity where pid = %s and (not %s or wait_event_type = 'Lock')",
                    (pid, waiting_only),
                ).fetchone()
            else:
                row = conn.execute(
                    "select count(*) from pg_stat_activity where datname = current_database() and "
                    "application_name = 'dbguard migrate'"
                ).fetchone()
            if not row[0]:
                return
            time.sleep(0.05)
    raise AssertionError("a runner session did not go away")


def _hold_rendezvous(dsn: str, step: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn, autocommit=True)
    if step == "tx":
        conn.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
    else:  # an open snapshot: CREATE INDEX CONCURRENTLY waits for it before it marks the index valid
        conn.execute("begin isolation level repeatable read")
        conn.execute("select count(*) from pg_class")
    return conn


def _release(conn: psycopg.Connection) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.close()


# --------------------------------------------------------------------------- what the database looks like
def observed_state(dsn: str, step: str) -> tuple[str, int]:
    """(ledger state, how many steps' effects are present); raises when the effects are not a prefix."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        q = lambda s, *a: conn.execute(s, a).fetchone()[0]  # noqa: E731
        col = q(
            "select count(*) from pg_attribute where attrelid = 'items'::regclass and attname = 'tenant_id' "
            "and not attisdropped"
        )
        notnull = q(
            "select count(*) from pg_attribute where attrelid = 'items'::regclass and attname = 'tenant_id' "
            "and attnotnull and not attisdropped"
        )
        rls = q("select relrowsecurity from pg_class where oid = 'items'::regclass")
        policy = q("select count(*) from pg_policy where polrelid = 'items'::regclass")
        index_valid = q(
            "select count(*) from pg_index where indrelid = 'items'::regclass and indisvalid "
            "and indexrelid::regclass::text = 'items_tenant_idx'"
        )
        invalid = q("select count(*) from pg_index where indrelid = 'items'::regclass and not indisvalid")
        done_table = q("select to_regclass('items_done') is not null")
        ledger = None
        if q("select to_regclass('dbguard.schema_migrations') is not null"):
            ledger = conn.execute(
                "select state, steps_done, steps_total from dbguard.schema_migrations where name = %s", (NAME,)
            ).fetchone()
    if step == "tx":
        effects = [True, bool(col), bool(notnull), bool(rls and policy), bool(done_table)]
    else:
        effects = [True, bool(col), bool(notnull), bool(index_valid), bool(rls and policy and done_table)]
    k = effects.index(False) if False in effects else len(effects)
    assert not any(effects[k:]), f"effects are not a prefix of the steps: {effects}"
    if ledger is None:
        label = "none"
    else:
        label = f"{ledger[0]} {ledger[1]}/{ledger[2]}"
    return label + (f" +{invalid} invalid" if invalid else ""), k


def _status(dsn: str, directory: Path) -> tuple[str, str]:
    [(state, name, detail)] = Runner(dsn, directory).status()
    assert name == NAME
    return state, detail


# --------------------------------------------------------------------------- running the runner
def _cli(dsn: str, directory: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "dbguard_pipeline.cli", "migrate", "up", "--dsn", dsn, "--dir", str(directory)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class _Thread(threading.Thread):
    def __init__(self, runner: Runner):
        super().__init__(daemon=True)
        self.runner, self.error, self.result = runner, None, None

    def run(self) -> None:
        try:
            self.result = self.runner.up()
        except MigrationError as exc:
            self.error = str(exc)


def _inject(case: Case, own_server: OwnServer, dsn: str, d: Path) -> str:
    """Start the runner, meet it at step 4, inject the fault; the runner's last words."""
    holder = _hold_rendezvous(dsn, case.step)
    message = ""
    if case.fault in ("sigterm", "sigkill"):
        proc = _cli(dsn, d)
        pid = _runner_backend(dsn)
        if case.fault == "sigterm":
            proc.send_signal(signal.SIGTERM)
            _wait_gone(dsn, pid, waiting_only=True)  # psycopg cancelled the statement at the rendezvous
            _release(holder)
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 2, (out, err)
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
            message = err
        else:
            proc.kill()
            proc.communicate(timeout=60)
            _release(holder)
            _wait_gone(dsn)  # the orphaned session finishes its statement, then sees the client is gone
    else:
        runner = Runner(dsn, d, reconnect_s=1.0 if case.fault == "outage" else 30.0)
        t = _Thread(runner)
        t.start()
        pid = _runner_backend(dsn)
        if case.fault == "terminate":
            with psycopg.connect(dsn, autocommit=True) as c:
                assert c.execute("select pg_terminate_backend(%s)", (pid,)).fetchone()[0]
            _wait_gone(dsn, pid)
            _release(holder)
        elif case.fault == "restart":
            own_server.restart()
            _release(holder)
        else:
            own_server.stop()
            t.join(timeout=120)
            _release(holder)
            own_server.start()
        t.join(timeout=180)
        assert not t.is_alive()
        assert t.result is None and t.error, "the run must fail"
        message = t.error
    return message


def _files(tmp_path: Path, step: str) -> Path:
    d = tmp_path / "migrations"
    d.mkdir()
    (d / f"{NAME}.sql").write_text(FORWARD[step])
    (d / f"{NAME}_rollback.sql").write_text(ROLLBACK)
    return d


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=[f"{c.fault}-{c.step}" for c in CASES])
def test_fault(case: Case, own_server: OwnServer, tmp_path):
    d = _files(tmp_path, case.step)
    dsn = own_server.create_database(f"fault_{case.fault}_{case.step}")
    message = _inject(case, own_server, dsn, d)
    ledger, steps = observed_state(dsn, case.step)
    state, detail = _status(dsn, d)
    if case.state_after.startswith("as before"):
        assert (ledger, steps) == ("none", 1), (ledger, steps, message)
        assert state == "pending"
        if case.fault != "sigkill":
            assert "the database is as it was before" in message, message
        observed_status = state
    else:
        assert state == "HALF-APPLIED" and "half-applied at step 3 of 5" in detail, detail
        observed_status = "HALF-APPLIED at step 3 of 5"
        if "INVALID" in case.status_says:
            assert ledger == "partial 3/5 +1 invalid" and steps == 3, (ledger, steps)
            assert "left the index items_tenant_idx INVALID" in detail, detail
            observed_status += "; step 4 left the index INVALID"
        elif "was built" in case.status_says:
            assert ledger == "partial 3/5" and steps == 4, (ledger, steps)
            assert "the index items_tenant_idx, was built" in detail, detail
            observed_status += "; step 4's index was built"
        else:
            assert (ledger, steps) == ("partial 3/5", 3), (ledger, steps, message)
    assert observed_status == case.status_says
    # the next up succeeds the first time and leaves it fully applied
    results = Runner(dsn, d).up()
    assert [r.name for r in results] == [NAME]
    assert results[0].resumed_at == (4 if "HALF" in case.status_says else 0)
    assert observed_state(dsn, case.step) == ("applied 5/5", 5)
    assert _status(dsn, d)[0] == "applied"


@pytest.mark.integration
@pytest.mark.parametrize("case", [c for c in CASES if "HALF" in c.status_says], ids=lambda c: f"{c.fault}-{c.step}")
def test_a_half_applied_migration_rolls_back(case: Case, own_server: OwnServer, tmp_path):
    d = _files(tmp_path, case.step)
    dsn = own_server.create_database(f"undo_{case.fault}_{case.step}")
    _inject(case, own_server, dsn, d)
    assert _status(dsn, d)[0] == "HALF-APPLIED"
    assert Runner(dsn, d).rollback(NAME).status == "rolled back"
    assert observed_state(dsn, case.step) == ("rolled_back None/5", 1)
    assert _status(dsn, d)[0] == "pending"
    assert [r.name for r in Runner(dsn, d).up()] == [NAME]
    assert observed_state(dsn, case.step) == ("applied 5/5", 5)


def test_the_fault_matrix_in_the_docs_is_the_tested_one():
    doc = (ROOT / "docs" / "migrations.md").read_text()
    assert render_matrix() in doc, "docs/migrations.md: paste `python -m dbguard_tests.test_runner_faults`"


if __name__ == "__main__":
    sys.stdout.write(render_matrix())
