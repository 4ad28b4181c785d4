"""Data metrics against a real PostgreSQL: counts, NULLs, orphans, cross-tenant rows, sampling, failures."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import sql

from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.dsn import parse_dsn
from dbguard_pipeline.pg.metrics import collect_metrics, plan_references, reference_query, scan_query
from dbguard_pipeline.pg.session import connect

from .conftest import run_sql

BASE = """
create table tenants (id uuid primary key, name text);
insert into tenants select md5('t' || i)::uuid, 't' || i from generate_series(1, 3) i;
"""


def measure(dsn, config=None, **kw):
    config = config or Config()
    snap = introspect(dsn)
    return collect_metrics(dsn, snap, config, **kw), snap


def test_rows_tenant_nulls_and_required_column_nulls(empty_dsn):
    run_sql(
        empty_dsn,
        BASE
        + """
        create table notes (id int primary key, tenant_id uuid references tenants(id), title text, body text);
        insert into notes select i, case when i % 10 = 0 then null else md5('t' || (i % 3 + 1))::uuid end,
               case when i % 4 = 0 then null else 'x' end, 'b' from generate_series(1, 100) i;
        create table empty_one (id int, tenant_id uuid);
    """,
    )
    config = Config(required_columns={"public.notes": ("title", "body")})
    m, _ = measure(empty_dsn, config)
    notes = m["public.notes"]
    assert (notes.rows, notes.tenant_nulls) == (100, 10)
    assert notes.null_counts == {"title": 25, "body": 0}
    assert notes.with_tenant == 90 and notes.coverage_percent == pytest.approx(90.0)
    assert notes.error is None and not notes.estimated
    assert (m["public.empty_one"].rows, m["public.empty_one"].tenant_nulls) == (0, 0)
    assert m["public.tenants"].rows == 3 and m["public.tenants"].tenant_nulls is None  # the root has no tenant column


def test_not_valid_foreign_key_orphans_are_counted(empty_dsn):
    run_sql(
        empty_dsn,
        BASE
        + """
        create table projects (id int primary key, tenant_id uuid not null references tenants(id));
        insert into projects select i, md5('t1')::uuid from generate_series(1, 5) i;
        create table tasks (id int primary key, tenant_id uuid not null references tenants(id), project_id int);
        insert into tasks select i, md5('t1')::uuid, i from generate_series(1, 12) i;  -- 6..12 have no project
        insert into tasks values (13, md5('t1')::uuid, null);                             -- NULL is not an orphan
        alter table tasks add constraint tasks_project_fk foreign key (project_id) references projects(id) not valid;
    """,
    )
    m, _ = measure(empty_dsn)
    tasks = m["public.tasks"]
    assert tasks.orphans == {"tasks_project_fk": 7}
    assert tasks.reference("tasks_project_fk").kind == "foreign_key_not_valid"
    assert tasks.cross_tenant == {"tasks_project_fk": 0}
    assert m["public.projects"].orphans == {}  # validated foreign keys are not re-checked


def test_missing_foreign_keys_tenant_column_and_inferred_parent(empty_dsn):
    run_sql(
        empty_dsn,
        BASE
        + """
        create table categories (id bigint primary key, tenant_id uuid references tenants(id));
        insert into categories values (1, md5('t1')::uuid), (2, md5('t2')::uuid);
        create table boxes (id uuid primary key);
        create table items (id int primary key, tenant_id uuid not null, category_id integer, box_id text,
                            other_id int);
        insert into items select i, case when i <= 2 then gen_random_uuid() else md5('t1')::uuid end,
               case when i <= 4 then 1 else 99 end, null, i from generate_series(1, 10) i;
    """,
    )
    m, _ = measure(empty_dsn)
    items = m["public.items"]
    # tenant_id has no foreign key: 2 rows point at tenants that do not exist
    assert items.reference("tenant_id").kind == "tenant_column" and items.orphans["tenant_id"] == 2
    # category_id -> categories(id) inferred (plural -ies, integer vs bigint compatible): 6 orphans
    ref = items.reference("category_id")
    assert ref.kind == "inferred" and (ref.ref_table, ref.ref_columns) == ("categories", ("id",))
    assert items.orphans["category_id"] == 6
    # rows 1..4 point at category 1 of tenant t1; rows 1 and 2 carry an unknown tenant: cross-tenant
    assert items.cross_tenant["category_id"] == 2
    # box_id is text but boxes.id is uuid: not inferred; other_id has no table called others
    assert items.reference("box_id") is None and items.reference("other_id") is None


def test_cross_tenant_references_through_foreign_keys(empty_dsn):
    run_sql(
        empty_dsn,
        BASE
        + """
        create table projects (id int primary key, tenant_id uuid not null references tenants(id),
                               unique (tenant_id, id));
        insert into projects select i, md5('t' || (i % 3 + 1))::uuid from generate_series(1, 6) i;
        create table tasks (id int primary key, tenant_id uuid references tenants(id),
                            project_id int references projects(id));
        -- project i belongs to tenant t(i%3+1); tasks 1..3 claim another tenant, task 4 has no tenant
        insert into tasks select i, md5('t' || (case when i <= 3 then i % 3 + 2 else i % 3 + 1 end - 1) % 3 + 1)::uuid,
               i from generate_series(1, 6) i;
        update tasks set tenant_id = md5('t' || ((project_id % 3) + 1))::uuid where id > 3;
        update tasks set tenant_id = null where id = 4;
        -- the composite foreign key pins the tenant: never checked (the database enforces it)
        create table pinned (id int primary key, tenant_id uuid not null, project_id int,
                             foreign key (tenant_id, project_id) references projects (tenant_id, id));
        -- self reference between rows of a tenant table
        create table folders (id int primary key, tenant_id uuid not null references tenants(id),
                              parent_id int references folders(id));
        insert into folders values (1, md5('t1')::uuid, null), (2, md5('t1')::uuid, 1), (3, md5('t2')::uuid, 1);
    """,
    )
    with connect(empty_dsn) as conn:
        expected = conn.execute(
            "select count(*) from tasks t join projects p on p.id = t.project_id where t.tenant_id <> p.tenant_id"
        ).fetchone()[0]
    assert expected == 3
    m, _ = measure(empty_dsn)
    assert m["public.tasks"].cross_tenant == {"tasks_project_id_fkey": 3}
    assert m["public.pinned"].cross_tenant == {} and m["public.pinned"].references == ()
    assert m["public.folders"].cross_tenant == {"folders_parent_id_fkey": 1}


@pytest.mark.parametrize("column_type", ["bigint", "text"])
def test_integer_and_text_tenant_ids(empty_dsn, column_type):
    run_sql(
        empty_dsn,
        sql.SQL("""
        create table orgs (id {t} primary key);
        insert into orgs values ('1'), ('2');
        create table docs (id int primary key, org {t} references orgs(id));
        insert into docs select i, case when i = 1 then null else ((i % 2) + 1)::text::{t} end
        from generate_series(1, 8) i;
        create table pages (id int primary key, org {t} not null, doc_id int references docs(id));
        insert into pages select i, '1', i from generate_series(1, 8) i;
        insert into pages values (9, '3', null);
    """)
        .format(t=sql.SQL(column_type))
        .as_string(None),
    )
    config = Config(tenant=TenantModel(column="org", column_type=column_type, tenants_table="public.orgs"))
    m, _ = measure(empty_dsn, config)
    assert (m["public.docs"].rows, m["public.docs"].tenant_nulls) == (8, 1)
    pages = m["public.pages"]
    assert pages.orphans == {"org": 1}  # org '3' does not exist; pages.org has no foreign key
    # docs 2..8 have org (i%2)+1; pages all say '1': docs with org '2' (i odd: 3,5,7) differ
    assert pages.cross_tenant == {"pages_doc_id_fkey": 3}


@pytest.mark.security
def test_hostile_identifiers_are_quoted_everywhere(empty_dsn):
    long_table = "t" * 63
    long_col = "c" * 60 + "_id"
    run_sql(
        empty_dsn,
        sql.SQL("""
        create schema {s};
        create table {s}.{ten} (id int primary key);
        insert into {s}.{ten} values (1), (2);
        create table {s}.{tbl} ({tc} int references {s}.{ten}(id), {req} text, id int primary key);
        insert into {s}.{tbl} values (1, 'a', 1), (null, null, 2), (2, 'b', 3);
        create table public.x (id int);
        create table {s}.{long} ({tc} int not null, {lc} int);
        insert into {s}.{long} values (1, 5);
    """)
        .format(
            s=sql.Identifier('Sch"ema ü'),
            ten=sql.Identifier("Tenants"),
            tbl=sql.Identifier('a"b; drop table x'),
            tc=sql.Identifier("Tenant ID"),
            req=sql.Identifier("Wert ✓"),
            long=sql.Identifier(long_table),
            lc=sql.Identifier(long_col),
        )
        .as_string(None),
    )
    config = Config(
        tenant=TenantModel(column="Tenant ID", column_type="integer", tenants_table='Sch"ema ü.Tenants'),
        required_columns={'Sch"ema ü.a"b; drop table x': ("Wert ✓",)},
    )
    m, _ = measure(empty_dsn, config)
    hostile = m['Sch"ema ü.a"b; drop table x']
    assert (hostile.rows, hostile.tenant_nulls, hostile.null_counts) == (3, 1, {"Wert ✓": 1})
    assert hostile.error is None
    long = m[f'Sch"ema ü.{long_table}']
    assert long.rows == 1 and long.orphans == {"Tenant ID": 0}
    with connect(empty_dsn) as conn:
        assert conn.execute("select to_regclass('public.x')").fetchone()[0] is not None


def test_partitioned_table_is_measured_once_through_its_parent(empty_dsn):
    run_sql(
        empty_dsn,
        BASE
        + """
        create table events (id int, tenant_id uuid, at date not null) partition by range (at);
        create table events_2024 partition of events for values from ('2024-01-01') to ('2025-01-01');
        create table events_2025 partition of events for values from ('2025-01-01') to ('2026-01-01');
        insert into events select i, case when i % 5 = 0 then null else md5('t1')::uuid end,
               date '2024-06-01' + i * 3 from generate_series(1, 100) i;
    """,
    )
    m, snap = measure(empty_dsn)
    assert (m["public.events"].rows, m["public.events"].tenant_nulls) == (100, 20)
    assert "public.events_2024" not in m and "public.events_2025" not in m
    assert m["public.events"].orphans == {"tenant_id": 0}


def test_large_tables_are_sampled_and_marked_estimated(empty_dsn):
    run_sql(
        empty_dsn,
        BASE
        + """
        create table big (id int primary key, tenant_id uuid, pad text);
        insert into big select i, case when i % 2 = 0 then null else md5('t1')::uuid end, repeat('x', 200)
        from generate_series(1, 20000) i;
        create table small (id int primary key, tenant_id uuid);
        insert into small select i, md5('t1')::uuid from generate_series(1, 50) i;
        analyze;
    """,
    )
    config = Config(sample_row_limit=1000, sample_percent=30)
    m, _ = measure(empty_dsn, config)
    big = m["public.big"]
    assert big.estimated and big.sample_percent == 30
    # a 30% block sample, scaled back: close to the truth, but an estimate
    assert 0.5 * 20000 <= big.rows <= 1.5 * 20000
    assert 0.3 <= big.tenant_nulls / big.rows <= 0.7
    assert not m["public.small"].estimated and m["public.small"].rows == 50
    # REPEATABLE: the same sample on every run, so reports do not flicker
    again, _ = measure(empty_dsn, config)
    assert again["public.big"].rows == big.rows


def _hold_lock(dsn, table, ready, release):
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("lock table {} in access exclusive mode").format(sql.Identifier(table)))
        ready.set()
        release.wait(30)
        conn.rollback()


@pytest.mark.parametrize(
    "timeouts,reason",
    [
        ({"lock_timeout_ms": 100, "statement_timeout_ms": 20_000}, "lock timeout"),
        ({"lock_timeout_ms": 20_000, "statement_timeout_ms": 150}, "statement timeout"),
    ],
)
def test_a_table_that_times_out_is_not_measured_never_clean(empty_dsn, timeouts, reason):
    run_sql(
        empty_dsn,
        BASE
        + """
        create table locked (id int, tenant_id uuid);
        insert into locked values (1, null);
        create table fine (id int, tenant_id uuid);
        insert into fine values (1, md5('t1')::uuid), (2, null);
        create table fine_child (id int, tenant_id uuid, locked_id int);
    """,
    )
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(empty_dsn, "locked", ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        snap = introspect(empty_dsn)
        m = collect_metrics(empty_dsn, snap, Config(**timeouts))
    finally:
        release.set()
        holder.join()
    locked = m["public.locked"]
    assert locked.rows is None and locked.tenant_nulls is None  # unknown, not 0
    assert reason in locked.error and not locked.measured
    assert (m["public.fine"].rows, m["public.fine"].tenant_nulls) == (2, 1)  # the others are still measured
    assert ("public.locked", locked.error) in m.not_measured()


@pytest.mark.security
def test_a_role_with_select_on_some_tables_gets_the_rest_as_not_measured(empty_dsn, server_dsn):
    run_sql(
        empty_dsn,
        BASE
        + """
        create table open_t (id int, tenant_id uuid);
        insert into open_t values (1, md5('t1')::uuid);
        create table secret_t (id int primary key, tenant_id uuid);
        alter table open_t add primary key (id);
        create table open_child (id int, open_id int, secret_id int);
        insert into open_child values (1, 1, 1), (2, 9, 2);
        alter table open_child add constraint to_open foreign key (open_id) references open_t(id) not valid;
        alter table open_child add constraint to_secret foreign key (secret_id) references secret_t(id) not valid;
        drop role if exists dbguard_metrics_reader;
        create role dbguard_metrics_reader login;
        grant select on tenants, open_t, open_child to dbguard_metrics_reader;
    """,
    )
    p = parse_dsn(empty_dsn)
    p["user"] = "dbguard_metrics_reader"
    reader = psycopg.conninfo.make_conninfo(**p)
    snap = introspect(reader)
    m = collect_metrics(reader, snap, Config())
    assert m["public.open_t"].rows == 1 and m["public.open_t"].error is None
    assert m["public.secret_t"].rows is None and "permission denied" in m["public.secret_t"].error
    # two references checked together: the unreadable parent makes one unknown, the other is still counted
    child = m["public.open_child"]
    assert child.rows == 2 and child.orphans == {"to_open": 1, "to_secret": None}
    assert "reference to_secret: permission denied" in child.error
    run_sql(empty_dsn, "drop owned by dbguard_metrics_reader; drop role dbguard_metrics_reader")


@pytest.mark.security
def test_metrics_never_write(demo_dsn):
    """The rows' xmin and the table write counters are the same before and after a full measurement."""
    stats = (
        "select relname, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd from pg_stat_user_tables "
        "where schemaname = 'public' order by relname"
    )
    with connect(demo_dsn) as conn:
        before_stats = conn.execute(stats).fetchall()
        before_xmin = conn.execute("select xmin::text, id from public.vehicles order by id").fetchall()
    m, _ = measure(demo_dsn)
    assert m["public.vehicles"].rows == 22
    with connect(demo_dsn) as conn:
        conn.execute("select pg_stat_clear_snapshot()")
        assert conn.execute(stats).fetchall() == before_stats
        assert conn.execute("select xmin::text, id from public.vehicles order by id").fetchall() == before_xmin


def test_one_scan_statement_per_table_and_one_per_reference(empty_dsn):
    """The scan counts every NULL column in one pass (a single aggregate over the table), and each
    reference is one join: a plan check, not a timing."""
    run_sql(
        empty_dsn,
        BASE
        + """
        create table a (id int primary key, tenant_id uuid references tenants(id), x text, y text);
        create table b (id int primary key, tenant_id uuid references tenants(id), a_id int);
        alter table b add foreign key (a_id) references a(id) not valid;
    """,
    )
    snap = introspect(empty_dsn)
    config = Config(required_columns={"public.a": ("x", "y")})
    a = snap.table("public.a")
    with connect(empty_dsn) as conn:
        plan = conn.execute(
            sql.SQL("explain (format json) ") + scan_query(a, ("tenant_id", "x", "y"), None)
        ).fetchone()[0][0]["Plan"]
        scans = []

        def walk(node):
            if "Relation Name" in node:  # a scan of a table (not of a subquery)
                scans.append(node["Relation Name"])
            for child in node.get("Plans", []):
                walk(child)

        walk(plan)
        assert scans == ["a"]
        refs = plan_references(snap, snap.table("public.b"), config)
        assert [r.name for r in refs] == ["b_a_id_fkey"] and refs[0].check_orphans and refs[0].check_tenant
        plan = conn.execute(
            sql.SQL("explain (format json) ") + reference_query(snap.table("public.b"), refs[0], None)
        ).fetchone()[0][0]["Plan"]
        scans.clear()
        walk(plan)
        assert sorted(scans) == ["a", "b"]


# --------------------------------------------------------------------------- the data rules, both ways
DATA_RULES = ["tenant_coverage", "orphaned_rows", "cross_tenant_reference", "null_violation"]

PROBLEMS = (
    BASE
    + """
create table projects (id int primary key, tenant_id uuid not null references tenants(id));
insert into projects select i, md5('t' || (i % 3 + 1))::uuid from generate_series(1, 6) i;
create table tasks (id int primary key, tenant_id uuid references tenants(id), project_id int, title text);
insert into tasks select i, md5('t' || (i % 3 + 1))::uuid, i, 'task' from generate_series(1, 6) i;
insert into tasks values (7, null, 1, 'no tenant'), (8, md5('t2')::uuid, 42, null);
update tasks set tenant_id = md5('t3')::uuid where id = 1;  -- project 1 belongs to t2
alter table tasks add constraint tasks_project_fk foreign key (project_id) references projects(id) not valid;
"""
)
FIXES = """
update tasks set tenant_id = md5('t2')::uuid where id in (1, 7);
update tasks set project_id = 2, title = 'fixed' where id = 8;
update tasks set tenant_id = md5('t3')::uuid where id = 8;
"""


def _audit(dsn, config):
    from dbguard_pipeline.audit import run_audit

    return run_audit(dsn, config, rules=DATA_RULES)


def test_data_rules_find_each_planted_problem_and_nothing_once_fixed(empty_dsn):
    run_sql(empty_dsn, PROBLEMS)
    config = Config(required_columns={"public.tasks": ("title",)})
    result = _audit(empty_dsn, config)
    keys = {f.cache_key: f for f in result.findings}
    assert set(keys) == {
        "tenant_coverage:public.tasks:tenant_id",
        "orphaned_rows:public.tasks:tasks_project_fk",
        "cross_tenant_reference:public.tasks:tasks_project_fk",
        "null_violation:public.tasks:title",
    }
    assert all(f.severity.value == "critical" and f.category == "integrity" for f in keys.values())
    assert keys["tenant_coverage:public.tasks:tenant_id"].detail["without_tenant"] == 1
    assert "1 of 8 rows" in keys["tenant_coverage:public.tasks:tenant_id"].message
    assert keys["orphaned_rows:public.tasks:tasks_project_fk"].detail["orphans"] == 1
    assert "NOT VALID" in keys["orphaned_rows:public.tasks:tasks_project_fk"].message
    assert "VALIDATE CONSTRAINT" in keys["orphaned_rows:public.tasks:tasks_project_fk"].remediation
    assert keys["cross_tenant_reference:public.tasks:tasks_project_fk"].detail["rows"] == 1
    assert keys["null_violation:public.tasks:title"].detail["nulls"] == 1
    run_sql(empty_dsn, FIXES)
    assert _audit(empty_dsn, config).findings == ()


def test_tenant_coverage_threshold_and_inferred_orphans(empty_dsn):
    run_sql(
        empty_dsn,
        BASE
        + """
        create table notes (id int primary key, tenant_id uuid references tenants(id));
        insert into notes select i, case when i = 1 then null else md5('t1')::uuid end from generate_series(1, 20) i;
        create table projects (id int primary key);
        create table tasks (id int primary key, project_id int);
        insert into tasks values (1, 5);
    """,
    )
    strict = _audit(empty_dsn, Config())
    assert {f.cache_key for f in strict.findings} == {
        "tenant_coverage:public.notes:tenant_id",
        "orphaned_rows:public.tasks:project_id",
    }
    orphan = next(f for f in strict.findings if f.rule == "orphaned_rows")
    assert "no foreign key" in orphan.message and "add-foreign-key tasks projects" in orphan.remediation
    assert [(c.table, c.rows, c.with_tenant, c.percent) for c in strict.coverage] == [("notes", 20, 19, 95.0)]
    lenient = _audit(empty_dsn, Config(coverage_threshold=90))  # 95% >= 90%: no coverage finding
    assert {f.rule for f in lenient.findings} == {"orphaned_rows"}


def test_ignored_findings_are_counted_not_dropped(empty_dsn):
    run_sql(empty_dsn, PROBLEMS)
    config = Config(
        ignore=("orphaned_rows:public.tasks:tasks_project_fk", "null_violation:public.*"),
        required_columns={"public.tasks": ("title",)},
    )
    result = _audit(empty_dsn, config)
    assert {f.rule for f in result.ignored} == {"orphaned_rows", "null_violation"}
    assert {f.rule for f in result.findings} == {"tenant_coverage", "cross_tenant_reference"}
    assert result.summary() == {"critical": 2, "warning": 0, "info": 0, "ignored": 2}


def test_required_column_that_does_not_exist_is_reported_not_measured(empty_dsn):
    run_sql(empty_dsn, BASE + "create table notes (id int primary key, tenant_id uuid references tenants(id));")
    result = _audit(empty_dsn, Config(required_columns={"public.notes": ("nope",), "public.ghost": ("x",)}))
    assert ("public.notes", "required column 'nope' does not exist") in result.not_measured
    assert ("public.ghost", "table named in required_columns does not exist") in result.not_measured
    assert result.exit_code("warning") == 1 and result.exit_code("critical") == 0


@pytest.mark.security
def test_row_level_security_never_yields_partial_counts(demo_dsn):
    """A role subject to RLS would see only some rows: such tables are not measured, never under-counted."""
    run_sql(
        demo_dsn,
        """
        drop role if exists dbguard_rls_reader;
        create role dbguard_rls_reader login;
        grant usage on schema auth to dbguard_rls_reader;
        grant select on all tables in schema public, auth to dbguard_rls_reader;
    """,
    )
    p = parse_dsn(demo_dsn)
    p["user"] = "dbguard_rls_reader"
    reader = psycopg.conninfo.make_conninfo(**p)
    try:
        m = collect_metrics(reader, introspect(reader), Config())
        assert m["public.garages"].rows == 6  # RLS disabled: measured
        vehicles = m["public.vehicles"]  # RLS enabled: this role would see a filtered subset
        assert vehicles.rows is None and "row level security" in vehicles.error
    finally:
        run_sql(demo_dsn, "drop owned by dbguard_rls_reader; drop role dbguard_rls_reader")


def test_parallel_workers_are_set_per_transaction_only(empty_dsn):
    from dbguard_pipeline.pg.metrics import _Runner

    runner = _Runner(empty_dsn, Config(parallel_workers=3))
    try:
        rows, err = runner.fetch(
            "select current_setting('max_parallel_workers_per_gather'), current_setting('transaction_read_only')"
        )
        assert err is None and rows == [("3", "on")]
        after = runner.conn.execute("select current_setting('max_parallel_workers_per_gather')").fetchone()
        assert after == ("2",)  # the server's default again: nothing outlives the audit's transaction
    finally:
        runner.close()
