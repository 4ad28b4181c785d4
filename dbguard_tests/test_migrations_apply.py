"""Generated migrations applied with the runner on a real database: the finding is gone, the isolation is
real as the application role, the rollback restores the snapshot object for object; hostile identifiers;
live conditions (held locks, concurrent writes)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.errors import MigrationError
from dbguard_pipeline.fixes.actions import NothingToFix, build_context, replan
from dbguard_pipeline.fixes.ledger import Runner
from dbguard_pipeline.fixes.sandbox import round_trip
from dbguard_pipeline.pg.catalog import introspect

from .conftest import run_sql
from .migrations_helpers import assert_same, findings_for, plan, rows_as_app, table_state, tenant_id, write


def assert_fixed(dsn, m, config=None):
    config = config or Config()
    rules = sorted({k.split(":", 1)[0] for k in m.fixes})
    assert not (findings_for(dsn, rules, config) & set(m.fixes)), "the audit still reports the finding"
    with pytest.raises(NothingToFix):
        replan(build_context(introspect(dsn), config, dsn), m)


def apply_and_roll_back(dsn, tmp_path, m, check=None, config=None):
    before = introspect(dsn)
    name = write(m, tmp_path)
    runner = Runner(dsn, tmp_path)
    assert [r.name for r in runner.up()] == [name]
    assert_fixed(dsn, m, config)
    if check:
        check()
    runner.rollback(name)
    assert_same(before, introspect(dsn))
    [(state, listed, detail)] = runner.status()
    assert (state, listed) == ("pending", name) and detail.startswith("rolled back ")


# --------------------------------------------------------------------------- every action on the demo
@pytest.mark.integration
@pytest.mark.security
def test_fix_rls_policy_profiles_isolates_tenants_and_rolls_back_exactly(demo_dsn, tmp_path):
    a, b = tenant_id(demo_dsn, 1), tenant_id(demo_dsn, 2)
    assert b in rows_as_app(demo_dsn, "public.profiles", a)  # USING (true): tenant B's rows are visible to A
    m = plan(demo_dsn, "fix-rls-policy", "profiles")
    assert "weak_rls_policy:public.profiles:Enable read access for all users" in m.fixes

    def isolated():
        seen = rows_as_app(demo_dsn, "public.profiles", a)
        assert seen and set(seen) == {a}
        assert rows_as_app(demo_dsn, "public.profiles", a, where=f"where tenant_id = '{b}'") == []
        # the replacement is a SELECT policy like the one it replaced: no command is widened, so moving a row
        # to tenant B updates nothing
        with psycopg.connect(demo_dsn) as conn, conn.transaction(force_rollback=True):
            conn.execute("select set_config('app.current_tenant_id', %s, true)", (a,))
            conn.execute("set local role authenticated")
            cur = conn.execute("update public.profiles set tenant_id = %s where tenant_id = %s", (b, a))
            assert cur.rowcount == 0

    apply_and_roll_back(demo_dsn, tmp_path, m, isolated)
    assert b in rows_as_app(demo_dsn, "public.profiles", a)  # rolled back: the old (weak) policy is back


@pytest.mark.integration
@pytest.mark.security
def test_fix_rls_policy_garages_enables_rls(demo_dsn, tmp_path):
    a, b = tenant_id(demo_dsn, 1), tenant_id(demo_dsn, 2)
    m = plan(demo_dsn, "fix-rls-policy", "garages")
    assert "rls_disabled_with_tenant_column:public.garages" in m.fixes

    def isolated():
        assert set(rows_as_app(demo_dsn, "public.garages", a)) == {a}
        assert rows_as_app(demo_dsn, "public.garages", a, where=f"where tenant_id = '{b}'") == []
        assert rows_as_app(demo_dsn, "public.garages", "") == []  # a reset context sees nothing, no error

    apply_and_roll_back(demo_dsn, tmp_path, m, isolated)
    assert table_state(demo_dsn, "public.garages").rls_enabled is False


@pytest.mark.integration
@pytest.mark.security
def test_add_tenant_isolation_conversation_messages(demo_dsn, tmp_path):
    a, b = tenant_id(demo_dsn, 1), tenant_id(demo_dsn, 2)
    m = plan(demo_dsn, "add-tenant-isolation", "conversation_messages")
    assert "missing_tenant_column:public.conversation_messages" in m.fixes

    def isolated():
        t = table_state(demo_dsn, "public.conversation_messages")
        col = t.column("tenant_id")
        assert col.type == "uuid" and col.not_null
        assert t.rls_enabled
        assert any(c.kind == "foreign_key" and c.ref_table == "tenants" and c.validated for c in t.constraints)
        assert not any(c.kind == "check" for c in t.constraints)  # the temporary CHECK is gone
        assert any(ix.columns[:1] == ("tenant_id",) and ix.valid for ix in t.indexes)
        with psycopg.connect(demo_dsn) as conn:  # every row got its conversation's tenant
            wrong = conn.execute(
                "select count(*) from public.conversation_messages m join public.conversations c "
                "on c.id = m.conversation_id where m.tenant_id is distinct from c.tenant_id"
            ).fetchone()[0]
            assert wrong == 0
        seen = rows_as_app(demo_dsn, "public.conversation_messages", a)
        assert seen and set(seen) == {a}
        assert rows_as_app(demo_dsn, "public.conversation_messages", a, where=f"where tenant_id = '{b}'") == []
        # the application inserts without naming the tenant: the column default takes it from the context
        with psycopg.connect(demo_dsn) as conn, conn.transaction(force_rollback=True):
            conn.execute("select set_config('app.current_tenant_id', %s, true)", (a,))
            conn.execute("set local role authenticated")
            conv = conn.execute("select id from public.conversations limit 1").fetchone()[0]
            got = conn.execute(
                "insert into public.conversation_messages (id, conversation_id, body) values "
                "(gen_random_uuid(), %s, 'hi') returning tenant_id::text",
                (conv,),
            ).fetchone()[0]
            assert got == a

    apply_and_roll_back(demo_dsn, tmp_path, m, isolated)
    assert table_state(demo_dsn, "public.conversation_messages").column("tenant_id") is None


@pytest.mark.integration
def test_add_composite_index_event_photos(demo_dsn, tmp_path):
    m = plan(demo_dsn, "add-composite-index", "event_photos", ["image_id"])
    assert "unindexed_foreign_key:public.event_photos:event_photos_image_id_fkey" in m.fixes

    def indexed():
        ix = [i for i in table_state(demo_dsn, "public.event_photos").indexes if i.columns == ("image_id",)]
        assert len(ix) == 1 and ix[0].valid and ix[0].name == "event_photos_image_id_idx"

    apply_and_roll_back(demo_dsn, tmp_path, m, indexed)


@pytest.mark.integration
def test_add_foreign_key_vehicle_spec_enhancements(demo_dsn, tmp_path):
    m = plan(demo_dsn, "add-foreign-key", "vehicle_spec_enhancements")
    assert any(k.startswith("tenant_fk_missing:public.vehicle_spec_enhancements") for k in m.fixes)

    def validated():
        fks = [
            c
            for c in table_state(demo_dsn, "public.vehicle_spec_enhancements").foreign_keys
            if c.columns == ("tenant_id",)
        ]
        assert len(fks) == 1 and fks[0].validated and fks[0].ref_table == "tenants"
        with psycopg.connect(demo_dsn) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("update public.vehicle_spec_enhancements set tenant_id = gen_random_uuid()")

    apply_and_roll_back(demo_dsn, tmp_path, m, validated)


@pytest.mark.integration
def test_sandbox_round_trip_of_every_fixable_finding_on_the_demo(demo_dsn):
    config = Config()
    from dbguard_pipeline.fixes.select import plan_all

    ctx = build_context(introspect(demo_dsn), config, demo_dsn)
    planned = plan_all(ctx)
    actions = {(m.action, m.qualified) for m in planned.migrations}
    assert {
        ("fix-rls-policy", "public.garages"),
        ("fix-rls-policy", "public.profiles"),
        ("add-tenant-isolation", "public.conversation_messages"),
        ("add-composite-index", "public.event_photos"),
        ("add-foreign-key", "public.vehicle_spec_enhancements"),
    } <= actions
    # the nine USING (true) tables, garages, conversations (unsafe cast evaluated per row),
    # and nothing on the tables done right
    assert ("fix-rls-policy", "public.conversations") in actions
    assert sum(1 for a, _ in actions if a == "fix-rls-policy") == 11
    assert not {t for _, t in actions} & {"public.vision_accuracy", "public.vision_metrics"}
    before = introspect(demo_dsn)
    result = round_trip(demo_dsn, planned.migrations, config)
    assert result.method == "template"
    assert result.ok, "\n".join(t.line() for t in result.trips)
    assert len(result.trips) == len(planned.migrations)
    assert_same(before, introspect(demo_dsn))  # the target itself was never touched


# --------------------------------------------------------------------------- hostile identifiers
HOSTILE_SCHEMA = 'Tenant "Data"; drop schema public'
HOSTILE_TENANTS = "Tenants ünïcödé"
HOSTILE_PARENT = 'a"b; drop table x'
HOSTILE_CHILD = "c" * 40 + "_messages_ñ"  # mixed unicode; names built on it overflow 63 bytes
LONG63 = "L" * 63


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def hostile_setup(dsn: str) -> None:
    s = _q(HOSTILE_SCHEMA)
    run_sql(
        dsn,
        f"""
        do $$ begin if not exists (select 1 from pg_roles where rolname = 'authenticated') then
          create role authenticated nologin; end if; end $$;
        create schema {s};
        grant usage on schema {s} to authenticated;
        create table {s}.{_q(HOSTILE_TENANTS)} ("Id" bigint primary key, name text not null);
        create table {s}.{_q(HOSTILE_PARENT)} (id bigint primary key, "Tenant_Id" bigint not null
            references {s}.{_q(HOSTILE_TENANTS)} ("Id"), "{LONG63}" int, body text);
        alter table {s}.{_q(HOSTILE_PARENT)} enable row level security;
        create policy "open ""door"" now" on {s}.{_q(HOSTILE_PARENT)} for select using (true);
        create table {s}.{_q(HOSTILE_CHILD)} (id bigint primary key, parent_id bigint not null
            references {s}.{_q(HOSTILE_PARENT)} (id), body text);
        insert into {s}.{_q(HOSTILE_TENANTS)} values (1, 'one'), (2, 'two');
        insert into {s}.{_q(HOSTILE_PARENT)} select g, 1 + g % 2, g, 'p' from generate_series(1, 20) g;
        insert into {s}.{_q(HOSTILE_CHILD)} select g, 1 + g % 20, 'c' from generate_series(1, 60) g;
        grant select, insert, update, delete on all tables in schema {s} to authenticated;
    """,
    )


HOSTILE_CONFIG = Config(
    tenant=TenantModel(
        context="guc",
        column="Tenant_Id",
        column_type="bigint",
        tenants_table=f"{HOSTILE_SCHEMA}.{HOSTILE_TENANTS}",
        tenants_key="Id",
    ),
    schemas=(HOSTILE_SCHEMA,),
)


@pytest.mark.security
@pytest.mark.integration
def test_hostile_identifiers_every_action_round_trips(empty_dsn, tmp_path):
    hostile_setup(empty_dsn)
    cfg = HOSTILE_CONFIG
    parent = f"{HOSTILE_SCHEMA}.{HOSTILE_PARENT}"
    child = f"{HOSTILE_SCHEMA}.{HOSTILE_CHILD}"
    s = _q(HOSTILE_SCHEMA)
    cases = [
        ("fix-rls-policy", parent, ()),
        ("add-tenant-isolation", child, ()),
        ("add-composite-index", parent, ("Tenant_Id", LONG63)),
    ]
    for action, table, args in cases:
        m = plan(empty_dsn, action, table, args, config=cfg)
        from dbguard_pipeline.fixes import script as mfiles
        from dbguard_pipeline.fixes.lint import lint_texts

        lint = lint_texts(mfiles.rendered([m], "20250101000000"))
        assert lint.ok, [str(v) for v in lint.violations] + lint.parse_errors
        d = tmp_path / action
        apply_and_roll_back(empty_dsn, d, m, config=cfg)
    # isolation through the bigint tenant after add-tenant-isolation, as the app role
    m = plan(empty_dsn, "add-tenant-isolation", child, config=cfg)
    write(m, tmp_path / "iso")
    Runner(empty_dsn, tmp_path / "iso").up()
    seen = rows_as_app(empty_dsn, f"{s}.{_q(HOSTILE_CHILD)}", "1", column="Tenant_Id")
    assert len(seen) == 30 and set(seen) == {"1"}
    assert (
        rows_as_app(empty_dsn, f"{s}.{_q(HOSTILE_CHILD)}", "1", column="Tenant_Id", where='where "Tenant_Id" = 2') == []
    )
    with psycopg.connect(empty_dsn) as conn:  # the schema and every table are still there
        n = conn.execute("select count(*) from pg_tables where schemaname = %s", (HOSTILE_SCHEMA,)).fetchone()[0]
        assert n == 3 and conn.execute("select to_regnamespace('public') is not null").fetchone()[0]


@pytest.mark.security
def test_hostile_add_foreign_key(empty_dsn, tmp_path):
    hostile_setup(empty_dsn)
    from psycopg import sql

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        fk = conn.execute(
            "select conname from pg_constraint where conrelid = %s::regclass and contype = 'f'",
            (f"{_q(HOSTILE_SCHEMA)}.{_q(HOSTILE_CHILD)}",),
        ).fetchone()[0]
        conn.execute(
            sql.SQL("alter table {} drop constraint {}").format(
                sql.Identifier(HOSTILE_SCHEMA, HOSTILE_CHILD), sql.Identifier(fk)
            )
        )
    child = f"{HOSTILE_SCHEMA}.{HOSTILE_CHILD}"
    parent = f"{HOSTILE_SCHEMA}.{HOSTILE_PARENT}"
    m = plan(empty_dsn, "add-foreign-key", child, (parent, "parent_id"), config=HOSTILE_CONFIG)
    assert "NOT VALID" in m.render_forward()
    apply_and_roll_back(empty_dsn, tmp_path, m, config=HOSTILE_CONFIG)


# --------------------------------------------------------------------------- live conditions
def _hold(dsn: str, sql_text: str, release: threading.Event, ready: threading.Event) -> None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute(sql_text)
        ready.set()
        release.wait(30)


@pytest.mark.integration
@pytest.mark.parametrize(
    "holder",
    [
        "select * from public.profiles for update",
        "lock table public.profiles in access share mode",
    ],
)
def test_held_rows_make_fix_rls_policy_fail_cleanly_on_lock_timeout(demo_dsn, tmp_path, holder):
    cfg = Config(lock_timeout_ms=200)
    m = plan(demo_dsn, "fix-rls-policy", "profiles", config=cfg)
    name = write(m, tmp_path)
    before = table_state(demo_dsn, "public.profiles")
    release, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=_hold, args=(demo_dsn, holder, release, ready))
    t.start()
    try:
        assert ready.wait(10)
        with pytest.raises(MigrationError, match="lock timeout.*nothing was changed"):
            Runner(demo_dsn, tmp_path).up()
        assert table_state(demo_dsn, "public.profiles") == before
        assert Runner(demo_dsn, tmp_path).status() == [("pending", name, "")]
    finally:
        release.set()
        t.join()
    assert [r.name for r in Runner(demo_dsn, tmp_path).up()] == [name]  # the lock is gone: it applies


@pytest.mark.integration
def test_add_tenant_isolation_with_a_held_lock_fails_cleanly(demo_dsn, tmp_path):
    cfg = Config(lock_timeout_ms=200)
    m = plan(demo_dsn, "add-tenant-isolation", "conversation_messages", config=cfg)
    write(m, tmp_path)
    before = table_state(demo_dsn, "public.conversation_messages")
    release, ready = threading.Event(), threading.Event()
    t = threading.Thread(
        target=_hold, args=(demo_dsn, "select * from public.conversation_messages for update", release, ready)
    )
    t.start()
    try:
        assert ready.wait(10)
        with pytest.raises(MigrationError, match="lock timeout"):
            Runner(demo_dsn, tmp_path).up()
        assert table_state(demo_dsn, "public.conversation_messages") == before
    finally:
        release.set()
        t.join()


@pytest.mark.integration
def test_add_tenant_isolation_succeeds_while_the_application_keeps_writing(demo_dsn, tmp_path):
    a = tenant_id(demo_dsn, 1)
    run_sql(
        demo_dsn,
        """insert into public.conversation_messages (id, conversation_id, body)
        select gen_random_uuid(), md5('conversation:' || (1 + g % 8))::uuid, 'bulk' from generate_series(1, 12000) g""",
    )
    m = plan(demo_dsn, "add-tenant-isolation", "conversation_messages")
    write(m, tmp_path)
    stop, errors, inserted = threading.Event(), [], []

    def writer():
        with psycopg.connect(demo_dsn, autocommit=True) as conn:
            conv = conn.execute("select id from public.conversations where tenant_id = %s limit 1", (a,)).fetchone()[0]
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline and len(inserted) < 5000:
                try:
                    with conn.transaction():
                        conn.execute("select set_config('app.current_tenant_id', %s, true)", (a,))
                        conn.execute(
                            "insert into public.conversation_messages (id, conversation_id, body) "
                            "values (gen_random_uuid(), %s, 'live')",
                            (conv,),
                        )
                    inserted.append(1)
                except psycopg.Error as exc:  # pragma: no cover - reported below
                    errors.append(str(exc))
                time.sleep(0.002)

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.1)
        Runner(demo_dsn, tmp_path, lock_retries=5).up()
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert len(inserted) > 0
    with psycopg.connect(demo_dsn) as conn:
        assert (
            conn.execute("select count(*) from public.conversation_messages where tenant_id is null").fetchone()[0] == 0
        )
        assert conn.execute("select count(*) from public.conversation_messages where body = 'live'").fetchone()[
            0
        ] == len(inserted)
        wrong = conn.execute(
            "select count(*) from public.conversation_messages m join public.conversations c "
            "on c.id = m.conversation_id where m.tenant_id <> c.tenant_id"
        ).fetchone()[0]
        assert wrong == 0
    assert table_state(demo_dsn, "public.conversation_messages").column("tenant_id").not_null


@pytest.mark.integration
def test_concurrent_index_waits_for_an_open_transaction_instead_of_failing(demo_dsn, tmp_path):
    """CREATE INDEX CONCURRENTLY runs without lock_timeout: it waits for the older transaction (never blocking
    reads or writes) and succeeds once it ends, instead of leaving an INVALID index behind."""
    m = plan(demo_dsn, "add-composite-index", "event_photos", ["image_id"], config=Config(lock_timeout_ms=200))
    write(m, tmp_path)
    release, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=_hold, args=(demo_dsn, "select * from public.event_photos for update", release, ready))
    t.start()
    assert ready.wait(10)
    threading.Timer(1.0, release.set).start()
    try:
        Runner(demo_dsn, tmp_path).up()
    finally:
        release.set()
        t.join()
    ix = [i for i in table_state(demo_dsn, "public.event_photos").indexes if i.columns == ("image_id",)]
    assert len(ix) == 1 and ix[0].valid


# --------------------------------------------------------------------------- psql, other tenant types
@pytest.mark.integration
def test_psql_applies_the_files_as_they_are(demo_dsn, tmp_path):
    """The file manages its own transactions: psql (no single-transaction wrapper) gives the same result."""
    import subprocess

    from dbguard_pipeline.pg.clients import client_binary, libpq_env

    before = introspect(demo_dsn)
    m = plan(demo_dsn, "add-tenant-isolation", "conversation_messages")
    fwd, rb = tmp_path / "f.sql", tmp_path / "r.sql"
    fwd.write_text(m.render_forward())
    rb.write_text(m.render_rollback())
    for path in (fwd,):
        proc = subprocess.run(
            [client_binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path)],
            env=libpq_env(demo_dsn),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
    assert_fixed(demo_dsn, m)
    proc = subprocess.run(
        [client_binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(rb)],
        env=libpq_env(demo_dsn),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert_same(before, introspect(demo_dsn))


@pytest.mark.security
@pytest.mark.integration
@pytest.mark.parametrize("tenant_type,a,b", [("text", "acme", "bright"), ("integer", "1", "2")])
def test_text_and_integer_tenant_ids(empty_dsn, tmp_path, tenant_type, a, b):
    run_sql(
        empty_dsn,
        f"""
        do $$ begin if not exists (select 1 from pg_roles where rolname = 'authenticated') then
          create role authenticated nologin; end if; end $$;
        create table public.tenants (id {tenant_type} primary key);
        create table public.projects (id int primary key, tenant_id {tenant_type} not null references public.tenants (id));
        create table public.tasks (id int primary key, project_id int not null references public.projects (id));
        insert into public.tenants values ('{a}'), ('{b}');
        insert into public.projects select g, (case when g % 2 = 0 then '{a}' else '{b}' end)::{tenant_type} from generate_series(1, 10) g;
        insert into public.tasks select g, 1 + g % 10 from generate_series(1, 40) g;
        grant select, insert, update, delete on all tables in schema public to authenticated;
    """,
    )
    cfg = Config(tenant=TenantModel(context="guc", column_type=tenant_type))
    for action, table in (("fix-rls-policy", "projects"), ("add-tenant-isolation", "tasks")):
        m = plan(empty_dsn, action, table, config=cfg)
        assert f"nullif(current_setting('app.current_tenant_id', true), '')::{tenant_type})" in m.render_forward()

        def isolated(table=table):
            seen = rows_as_app(empty_dsn, f"public.{table}", a)
            assert seen and set(seen) == {a}
            assert rows_as_app(empty_dsn, f"public.{table}", a, where=f"where tenant_id = '{b}'") == []

        apply_and_roll_back(empty_dsn, tmp_path / action, m, isolated, config=cfg)
