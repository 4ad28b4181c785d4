"""The libpq path of the introspection (pg/libpq.py: no psycopg import on the CLI's start-up) gives exactly what
the psycopg path gives: the same snapshot, the same one-line errors, the same read-only transactions."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import psycopg
import pytest
from psycopg import sql

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.pg import catalog, libpq
from dbguard_pipeline.pg.dsn import parse_dsn
from dbguard_pipeline.pg.session import connect

from .conftest import SECRET, _as_user, run_sql

LIB = libpq.load(respect_env=False)  # these tests are the libpq path's, whatever DBGUARD_LIBPQ says
HOSTILE_SCHEMAS = ["Mixed Case", 'a"b; drop table x', "c\\d,e{f}", "ünï"]


def test_libpq_loads_here():
    # the wheel's libpq (or the system's): when it does not load, the fast path silently falls back, so say it
    assert LIB is not None


def _without_clock(snap):
    return dataclasses.replace(snap, taken_at="")


@pytest.fixture(params=["one connection", "two connections", "one connection, no pipeline"])
def connections(request, monkeypatch):
    """The shapes of the libpq path: one connection (below catalog._SECOND_CONNECTION_FROM tables), two sharing
    an exported snapshot (above it), and the statements one by one (a libpq older than 14 has no pipeline)."""
    monkeypatch.setattr(catalog, "_SECOND_CONNECTION_FROM", 0 if request.param == "two connections" else 10**9)
    monkeypatch.setattr(libpq, "PIPELINE", "no pipeline" not in request.param)
    return request.param


def _both(dsn, schemas=None, **timeouts):
    timeouts = {"statement_timeout_ms": 60_000, "lock_timeout_ms": 2_000, **timeouts}
    fast = catalog._introspect_libpq(LIB, dsn, schemas, timeouts["statement_timeout_ms"], timeouts["lock_timeout_ms"])
    slow = catalog._introspect_two_connections(
        dsn, schemas, timeouts["statement_timeout_ms"], timeouts["lock_timeout_ms"]
    )
    return _without_clock(fast), _without_clock(slow)


def test_fields_are_the_names_the_server_gives(demo_dsn):
    with connect(demo_dsn) as conn:
        for query in catalog.QUERIES:
            cur = conn.execute(query, catalog._params_for(query, None))
            assert tuple(d.name for d in cur.description) == catalog.FIELDS[query]


def test_the_demo_snapshot_is_the_same_on_both_paths(demo_dsn, connections):
    fast, slow = _both(demo_dsn)
    assert len(fast.tables) == 17 and sum(len(t.policies) for t in fast.tables) > 10  # 16 + auth.users
    assert fast == slow
    assert catalog.introspect(demo_dsn).tables == slow.tables  # the public entry point takes the libpq path


def _hostile_database(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n, schema in enumerate(HOSTILE_SCHEMAS):
            s = sql.Identifier(schema)
            conn.execute(sql.SQL("create schema {}").format(s))
            conn.execute(
                sql.SQL(
                    "create table {}.{} ({} int primary key, tenant_id uuid not null default gen_random_uuid(),"
                    " note text default {}, {} int generated always as ({} * 2) stored)"
                ).format(
                    s,
                    sql.Identifier(f't{n} "x"\n\t'),
                    sql.Identifier("id ✓"),
                    sql.Literal('it\'s \\ "quoted" \x01 ü'),
                    sql.Identifier("twice"),
                    sql.Identifier("id ✓"),
                )
            )
            conn.execute(
                sql.SQL("alter table {}.{} enable row level security").format(s, sql.Identifier(f't{n} "x"\n\t'))
            )
            conn.execute(
                sql.SQL("create policy {} on {}.{} using (tenant_id = current_setting({})::uuid)").format(
                    sql.Identifier(f"p {schema}"), s, sql.Identifier(f't{n} "x"\n\t'), sql.Literal("app.tenant")
                )
            )
            conn.execute(
                sql.SQL("comment on table {}.{} is {}").format(
                    s, sql.Identifier(f't{n} "x"\n\t'), sql.Literal('\\N \u2028 "')
                )
            )


def test_hostile_names_and_a_schema_filter_are_the_same_on_both_paths(empty_dsn, connections):
    _hostile_database(empty_dsn)
    fast, slow = _both(empty_dsn)
    assert fast == slow
    assert {t.schema for t in fast.tables} == set(HOSTILE_SCHEMAS)
    table = next(t for t in fast.tables if t.schema == 'a"b; drop table x')
    assert table.name == 't1 "x"\n\t' and table.comment == '\\N \u2028 "'
    assert [c.name for c in table.columns] == ["id ✓", "tenant_id", "note", "twice"]
    # the schema filter goes through as a bound text[] parameter: every hostile name matches itself only
    picked = HOSTILE_SCHEMAS[1:3]
    fast, slow = _both(empty_dsn, picked)
    assert fast == slow and {t.schema for t in fast.tables} == set(picked) and set(fast.schemas) == set(picked)


def test_a_connection_limit_of_one_gives_the_same_snapshot(server_dsn, demo_dsn, connections):
    with connect(server_dsn, autocommit=True) as conn:
        conn.execute("drop role if exists dbguard_one_conn_lp")
        conn.execute("create role dbguard_one_conn_lp login connection limit 1")
        conn.execute(
            sql.SQL("grant connect on database {} to dbguard_one_conn_lp").format(
                sql.Identifier(parse_dsn(demo_dsn)["dbname"])
            )
        )
    p = parse_dsn(demo_dsn)
    p["user"] = "dbguard_one_conn_lp"
    dsn = psycopg.conninfo.make_conninfo(**p)
    fast = catalog._introspect_libpq(LIB, dsn, None, 60_000, 2_000)
    assert fast.current_user == "dbguard_one_conn_lp"
    # the server frees the role's one connection slot when the backend has exited, a moment after close
    for attempt in range(50):
        try:
            conn = psycopg.connect(dsn)
            break
        except psycopg.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    with conn:
        assert _without_clock(fast) == _without_clock(catalog.introspect(conn))


def _error(fn):
    try:
        fn()
    except DbguardError as exc:
        return type(exc).__name__, str(exc)
    raise AssertionError("no error")


def test_connection_errors_read_the_same_on_both_paths(server_dsn, password_role, tmp_path):
    p = parse_dsn(server_dsn)
    cases = {
        "wrong password": _as_user(server_dsn, password_role, "not-" + SECRET),
        "no such database": psycopg.conninfo.make_conninfo(**{**p, "dbname": "dbguard_no_such_db"}),
        "nobody listens": f"host={tmp_path} port=1 dbname=x user=x connect_timeout=2",
    }
    for what, dsn in cases.items():
        fast = _error(lambda dsn=dsn: catalog._introspect_libpq(LIB, dsn, None, 60_000, 2_000))
        slow = _error(lambda dsn=dsn: catalog.introspect(psycopg_only(dsn)))
        assert fast == slow, what
        assert fast[0] == "ConnectionError_" and SECRET not in fast[1], what
    assert (
        "wrong user name or password"
        in _error(lambda: catalog._introspect_libpq(LIB, cases["wrong password"], None, 60_000, 2_000))[1]
    )


def psycopg_only(dsn):
    """An open psycopg connection's failure is the psycopg path's (catalog.introspect with a DSN would take the
    libpq path): connect exactly as the psycopg path does."""
    return connect(dsn)


def test_a_held_lock_is_a_lock_timeout_on_the_libpq_path(demo_dsn, connections):
    holder = psycopg.connect(demo_dsn)
    try:
        holder.execute("lock table public.vehicles in access exclusive mode")
        kind, message = _error(lambda: catalog._introspect_libpq(LIB, demo_dsn, None, 60_000, 100))
        assert (kind, message) == (
            "DbguardError",
            "gave up waiting for a lock after the lock timeout (100 ms): canceling statement due to lock timeout",
        )
        assert _error(lambda: catalog._introspect_two_connections(demo_dsn, None, 60_000, 100)) == (kind, message)
    finally:
        holder.rollback()
        holder.close()


def test_the_libpq_path_reads_in_read_only_transactions_with_the_timeouts(demo_dsn, connections):
    """What the server saw: every statement of dbguard's sessions inside READ ONLY transactions with the timeouts
    (pg_stat_activity of the second connection, caught while it holds its transaction open behind a lock)."""
    holder = psycopg.connect(demo_dsn)
    try:
        holder.execute("lock table public.vehicles in access exclusive mode")
        import threading

        seen: dict = {}

        def watch():
            with psycopg.connect(demo_dsn, autocommit=True) as w:
                for _ in range(200):
                    row = w.execute(
                        "select pid from pg_stat_activity where application_name = 'dbguard' and wait_event_type = 'Lock'"
                    ).fetchone()
                    if row:
                        seen["pid"] = row[0]
                        return
                    import time

                    time.sleep(0.01)

        t = threading.Thread(target=watch)
        t.start()
        _error(lambda: catalog._introspect_libpq(LIB, demo_dsn, None, 60_000, 1_500))
        t.join()
        assert "pid" in seen  # a dbguard connection waited on the lock (and gave up: read-only, nothing held)
    finally:
        holder.rollback()
        holder.close()
    with psycopg.connect(demo_dsn) as conn:
        conn.execute(catalog._session_sql(1234, 567))
        assert conn.execute("show statement_timeout").fetchone()[0] == "1234ms"
        assert conn.execute("show lock_timeout").fetchone()[0] == "567ms"
        assert conn.execute("show search_path").fetchone()[0] == "pg_catalog"


def test_a_write_in_the_libpq_session_is_refused(demo_dsn):
    conn = libpq.Connection(LIB, demo_dsn)
    try:
        assert conn.execute(f"{catalog._BEGIN}; {catalog._session_sql(60_000, 2_000)}") == (
            "1min",
            "2s",
            "2min",
            "pg_catalog",
        )
        assert conn.execute("show transaction_read_only") == ("on",)
        with pytest.raises(libpq.LibpqError) as info:
            conn.execute("create table public.should_not_exist (id int)")
        assert info.value.sqlstate == "25006"  # read_only_sql_transaction
    finally:
        conn.close()


def test_validate_no_data_never_imports_psycopg(demo_dsn, tmp_path):
    imported = _imported(demo_dsn, tmp_path)
    assert "dbguard_pipeline.pg.libpq" in imported and "dbguard_pipeline.rules.rls.weak_rls_policy" in imported
    assert not {m for m in imported if m.split(".")[0] in ("psycopg", "psycopg_binary", "pydantic", "yaml")}
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["critical"] > 0
    # and the same report as the psycopg path
    env = dict(os.environ, **{libpq.ENV_LIBPQ: "psycopg"})
    slow = tmp_path / "slow.json"
    subprocess.run(
        [sys.executable, "-m", "dbguard_pipeline.cli", "validate", "--dsn", demo_dsn, "--no-data", "--format", "json",
         "--out", str(slow)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    other = json.loads(slow.read_text())
    report.pop("generated_at"), other.pop("generated_at")
    assert report == other


def test_the_text_report_is_whole_through_a_pipe(demo_dsn):
    """validate leaves without the interpreter's teardown (os._exit after the flush): nothing may be lost."""
    proc = subprocess.run(
        [sys.executable, "-m", "dbguard_pipeline.cli", "validate", "--dsn", demo_dsn, "--no-data", "-v"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stdout.rstrip().splitlines()[-1].endswith("FAIL at --fail-on critical")


def test_parse_dsn_is_libpqs_parse(server_dsn):
    from psycopg import conninfo

    for dsn in (
        server_dsn,
        "postgresql://u:p%40ss@h1:5432,h2:5433/db?sslmode=require&application_name=x",
        "host=/tmp/sock port=5433 user='a b' password='it\\'s' dbname=x",
        "postgres://%2Fvar%2Frun/db",
    ):
        assert libpq.conninfo_to_dict(LIB, dsn) == conninfo.conninfo_to_dict(dsn)
    with pytest.raises(ValueError, match="unterminated quoted string"):
        libpq.conninfo_to_dict(LIB, "host='x")


def test_text_array_round_trips_through_the_server(empty_dsn):
    values = ['a"b', "c\\d", "e,f", "{g}", "NULL", "", " h ", "ü"]
    conn = libpq.Connection(LIB, empty_dsn)
    try:
        got = list(conn.first_values(["select to_json($1::text[])"], [[libpq.text_array(values)]]))
    finally:
        conn.close()
    assert json.loads(got[0]) == values


def test_quoted_is_psycopgs_identifier():
    from dbguard_pipeline.text import quoted, quoted_qname

    for name in ['a""b; drop table x', "Mixed Case", "ü", 'x"', "", "a\nb", "select"]:
        assert quoted(name) == sql.Identifier(name).as_string(None)
        assert quoted_qname(name, "t") == sql.Identifier(name, "t").as_string(None)


def _nested(depth):
    doc: object = "x"
    for _ in range(depth):
        doc = [doc]
    return doc


def test_report_json_is_jsons_indented_text():
    import datetime
    import decimal

    from dbguard_pipeline.report.json import dumps

    docs = [
        {}, [], "x", 5, None, True, {"a": []}, {"a": {}}, [1, [2, [3, {}]]], {"é\n\"": "ü\x00\u2028\\"},
        {"t": (1, (2,))}, {"f": 1.5, "n": float("nan")}, {1: 2}, {"d": datetime.date(2020, 1, 1)},
        {"b": [True, False, None, -7, 10**30]}, {"dec": decimal.Decimal("1.10")}, list(range(50)),
        {"deep": _nested(120)},
    ]  # fmt: skip
    for doc in docs:
        assert dumps(doc) == json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n", doc


def test_ctrl_c_while_the_catalog_waits_cancels_and_leaves_no_session(demo_dsn, tmp_path):
    import signal

    config = tmp_path / "dbguard.yaml"
    config.write_text("lock_timeout_ms: 60000\n")
    holder = psycopg.connect(demo_dsn)
    try:
        holder.execute("lock table public.vehicles in access exclusive mode")
        proc = subprocess.Popen(
            [sys.executable, "-m", "dbguard_pipeline.cli", "validate", "--dsn", demo_dsn, "--config", str(config),
             "--no-data", "--format", "json", "--out", str(tmp_path / "r.json")],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with psycopg.connect(demo_dsn, autocommit=True) as watch:
            for _ in range(600):  # until dbguard's catalog query waits on the lock
                if watch.execute(
                    "select count(*) from pg_stat_activity where application_name = 'dbguard'"
                    " and wait_event_type = 'Lock'"
                ).fetchone()[0]:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("dbguard never waited on the lock")
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
            assert proc.returncode == 130 and err.strip().endswith("interrupted"), err
            for _ in range(600):  # the backends end a moment after the client (30 s: a loaded machine)
                left = watch.execute(
                    "select count(*) from pg_stat_activity where application_name = 'dbguard'"
                ).fetchone()[0]
                if not left:
                    break
                time.sleep(0.05)
            assert left == 0, watch.execute(
                "select state, wait_event_type, wait_event, left(query, 80) from pg_stat_activity"
                " where application_name = 'dbguard'"
            ).fetchall()
    finally:
        holder.rollback()
        holder.close()


_MODULES_AFTER = (
    "import json, sys\n"
    "from dbguard_pipeline.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
)


def _imported(dsn, tmp_path) -> set[str]:
    """The modules a `validate --no-data` process holds when the command returns (sys.modules: imports through
    importlib count too, which -X importtime does not show)."""
    env = {k: v for k, v in os.environ.items() if k != libpq.ENV_LIBPQ}
    proc = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER, "validate", "--dsn", dsn, "--no-data", "--format", "json", "--out",
         str(tmp_path / "r.json")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] in (0, 1), proc.stderr[-2000:]
    return set(result["modules"])


def test_the_policy_parser_loads_only_for_a_database_with_policies(empty_dsn, demo_dsn, tmp_path):
    run_sql(empty_dsn, "create table plain (id int primary key, tenant_id uuid, note text)")
    without = _imported(empty_dsn, tmp_path)
    assert "dbguard_pipeline.rules.rls.weak_rls_policy" in without  # the rules ran
    assert not {m for m in without if m.split(".")[0] == "pglast" or m.startswith("dbguard_pipeline.policy")}
    assert "pglast" in _imported(demo_dsn, tmp_path)  # the demo's policies are parsed


def _sql_ascii_database(databases) -> str:
    name = f"sqlascii_{os.getpid()}_{len(databases.created)}"
    with connect(databases.server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} encoding 'SQL_ASCII' template template0 lc_collate 'C' lc_ctype 'C'").format(
                sql.Identifier(name)
            )
        )
    databases.created.append(name)
    from dbguard_pipeline.pg.dsn import with_database

    return with_database(databases.server_dsn, name)


@pytest.mark.parametrize("path", ["libpq", "psycopg"])
def test_a_sql_ascii_database_is_audited_or_refused_in_one_line(databases, tmp_path, path):
    """Text comes back as str on both paths (client_encoding UTF8): a SQL_ASCII database with ASCII names is
    audited and probed; one holding other bytes is refused in one line (it was a traceback)."""
    dsn = _sql_ascii_database(databases)
    run_sql(dsn, "create table t (id int primary key, tenant_id int, note text)")
    env = dict(os.environ, **({libpq.ENV_LIBPQ: "psycopg"} if path == "psycopg" else {}))

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "dbguard_pipeline.cli", *args, "--dsn", dsn, "--out", str(tmp_path / "out")],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip

    proc = cli("validate")
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    proc = cli("test-isolation")  # no app role in a fresh database: a one-line refusal, not the encoding
    assert "Traceback" not in proc.stderr and "UTF-8" not in proc.stderr, proc.stderr[-1500:]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.pgconn.exec_(b'create table "caf\xe9" (id int primary key)')
    for args in (("validate", "--no-data"), ("test-isolation",)):
        proc = cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
        assert len(proc.stderr.strip().splitlines()) == 1 and "not valid UTF-8" in proc.stderr
