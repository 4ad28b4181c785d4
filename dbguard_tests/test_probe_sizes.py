"""Issue 12: a probe that proves a write leak leaves every table and the database the size they were.

A rolled-back INSERT or UPDATE still leaves its tuple (and index entries) behind, and extends the relation when
its last page is full. The probe now sets one NOT NULL column to NULL in the write probes: PostgreSQL checks the
policies' WITH CHECK before NOT NULL, so a row the policies admit fails with 23502 before it is written (a
leak), one they refuse with 42501 (held). The tables here are filled so that their last page has room for the
probe's own test rows (a fresh row of A and of B, and the candidate INSERT it validates) and for nothing more:
the real writes of the leaks used to extend them; the isolated control table shows that the test rows fit.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from dbguard_pipeline import services
from dbguard_pipeline.config import Config, TenantModel

from .isolation_helpers import APP, ROLES_SQL, TENANT_A, TENANT_B, TENANT_C, TENANTS_SQL, scratch_database

pytestmark = pytest.mark.security

CTX = "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"
GUC = Config(tenant=TenantModel(app_role=APP))
SETUP_ROWS = 3  # the probe's own rows per table: a fresh row of B and of A, the candidate INSERT (rolled back)
NOT_WRITTEN = "writes nothing"


def table(name: str, using: str, check: str) -> str:
    return f"""
CREATE TABLE public.{name} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), body text NOT NULL,
    pad char(1500) NOT NULL DEFAULT 'x');
ALTER TABLE public.{name} ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.{name} FOR ALL TO {APP} USING ({using}) WITH CHECK ({check});
"""


TABLES = {
    "leaky": ("true", "true"),  # INSERT, UPDATE of B's rows, moving A's rows to B: all leak
    # B's rows hidden, but A may insert rows for B and move its rows to B (blind: filtered, the SELECT policy
    # also checks the new row)
    "moves": (f"tenant_id = {CTX}", "true"),
    "sealed": (f"tenant_id = {CTX}", f"tenant_id = {CTX}"),  # isolated: the control
}
GRANTS = f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP};"


def fill(name: str, room: int = SETUP_ROWS) -> str:
    """Rows of A and B (alternating) until the last page has room for exactly ``room`` more."""
    return f"""
DO $$
DECLARE per_page int; n int := 0;
BEGIN
  LOOP
    INSERT INTO public.{name} (tenant_id, body)
      VALUES (CASE WHEN n % 2 = 0 THEN '{TENANT_A}'::uuid ELSE '{TENANT_B}'::uuid END, 'row ' || n);
    n := n + 1;
    EXIT WHEN n >= 40;
  END LOOP;
  SELECT count(*) INTO per_page FROM public.{name} WHERE (ctid::text::point)[0] = 0;
  DELETE FROM public.{name} WHERE id > 3 * per_page - {room};
END $$;
"""


def sizes(dsn: str, probed=TABLES) -> tuple[dict[str, int], int, dict[str, tuple[int, int, int]]]:
    """pg_total_relation_size of every table, pg_database_size, and for each probed table the rows on its first
    page, the rows on its last page and its pages."""
    with psycopg.connect(dsn) as conn:
        tables = dict(
            conn.execute(
                "select c.relname::text, pg_total_relation_size(c.oid) from pg_class c join pg_namespace n"
                " on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind = 'r'"
            ).fetchall()
        )
        db = conn.execute("select pg_database_size(current_database())").fetchone()[0]
        pages = {
            t: conn.execute(
                f"select count(*) filter (where (ctid::text::point)[0] = 0), count(*) filter (where"
                f" (ctid::text::point)[0] = (select max((ctid::text::point)[0]) from public.{t})),"
                f" max((ctid::text::point)[0])::int + 1 from public.{t}"
            ).fetchone()
            for t in probed
        }
    return tables, db, pages


@pytest.fixture(scope="module")
def measured(server_dsn):
    setup = ROLES_SQL + TENANTS_SQL + "".join(table(n, u, c) + fill(n) for n, (u, c) in TABLES.items()) + GRANTS
    # VACUUM FULL rewrites each table compactly: every page before the last is full (the DELETE left holes)
    with scratch_database(server_dsn, setup, "VACUUM FULL", "VACUUM ANALYZE", "CHECKPOINT") as dsn:
        before = sizes(dsn)
        report = services.probe(dsn, GUC)
        after = sizes(dsn)
    return before, report, after


def verdicts(report, t: str) -> dict[str, str]:
    return {r.probe: ("held" if r.isolated else "leak") for r in report.results if r.table == t} | {
        n.probe: "not probed" for n in report.not_probed if n.table == t
    }


def test_the_tables_are_filled_as_the_test_needs(measured):
    pages = measured[0][2]
    # full pages, then a last one with room for the probe's own rows and no more
    assert all(n >= 3 and first - last == SETUP_ROWS for first, last, n in pages.values()), pages


def test_leaks_are_proven_without_growing_any_table_or_the_database(measured):
    before, report, after = measured
    assert after[0] == before[0]
    assert after[1] == before[1]
    leaky, moves, sealed = verdicts(report, "leaky"), verdicts(report, "moves"), verdicts(report, "sealed")
    writes = ("insert_for_other_tenant", "update_other_tenant", "update_other_tenant_blind")
    moving = ("move_row_to_other_tenant", "move_row_to_other_tenant_blind")
    assert all(leaky[p] == "leak" for p in writes + moving), leaky
    assert moves["insert_for_other_tenant"] == moves["move_row_to_other_tenant_blind"] == "leak", moves
    assert moves["update_other_tenant"] == moves["move_row_to_other_tenant"] == "held", moves
    assert set(sealed.values()) == {"held"}, sealed


def test_the_witness_says_the_row_was_admitted_and_not_written(measured):
    report = measured[1]
    for r in report.results:
        if r.isolated or r.command not in ("insert", "update"):
            continue
        assert NOT_WRITTEN in r.detail and "admitted" in r.detail, r.detail
        assert r.rows == 1
        assert "body = NULL" in r.statement or "body NULL" in r.statement, r.statement


# --------------------------------------------------------------------------- when the probe still writes
WRITTEN_SQL = (
    ROLES_SQL
    + TENANTS_SQL
    + f"""
-- every NOT NULL column of its own is read by a policy: setting one to NULL could change what the policy says
CREATE TABLE public.reads_all (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), body text NOT NULL);
ALTER TABLE public.reads_all ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.reads_all FOR ALL TO {APP} USING (true) WITH CHECK (body IS NOT NULL);
-- a BEFORE trigger may fill the column (here it does): the real write, judged as before
CREATE TABLE public.filled (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), body text NOT NULL);
CREATE FUNCTION public.fill_body() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.body := coalesce(NEW.body, 'filled'); RETURN NEW; END $$;
CREATE TRIGGER fill BEFORE INSERT OR UPDATE ON public.filled FOR EACH ROW EXECUTE FUNCTION public.fill_body();
ALTER TABLE public.filled ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.filled FOR ALL TO {APP} USING (true) WITH CHECK (true);
-- the application may not write the column: a NULL there would be refused for its privilege, not the policy
CREATE TABLE public.narrow (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), body text NOT NULL);
ALTER TABLE public.narrow ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.narrow FOR ALL TO {APP} USING (true) WITH CHECK (true);
-- RLS forgotten, and a foreign key that pins each row's customer to its tenant: a real UPDATE to another tenant
-- fails on it after the policies (not probed, as before), where a NULL would have read as a leak
CREATE TABLE public.customers (tenant_id uuid NOT NULL REFERENCES public.tenants (id), id int NOT NULL,
    PRIMARY KEY (tenant_id, id));
INSERT INTO public.customers SELECT id, row_number() OVER (ORDER BY id) FROM public.tenants;
CREATE TABLE public.pinned (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id uuid NOT NULL,
    customer_id int NOT NULL, body text NOT NULL, FOREIGN KEY (tenant_id, customer_id) REFERENCES public.customers);
INSERT INTO public.pinned (tenant_id, customer_id, body) SELECT tenant_id, id, 'x' FROM public.customers;
-- a whole-row reference reads every column
CREATE TABLE public.whole (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), body text NOT NULL);
ALTER TABLE public.whole ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.whole FOR ALL TO {APP} USING (true) WITH CHECK (whole IS NOT NULL);
"""
    + "".join(
        f"INSERT INTO public.{t} (tenant_id, body) SELECT id, name FROM public.tenants;\n"
        for t in ("reads_all", "filled", "narrow", "whole")
    )
    + f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.reads_all, public.filled, public.whole, public.pinned,"
    f" public.customers TO {APP};\n"
    + f"GRANT SELECT, DELETE, INSERT (id, tenant_id), UPDATE (tenant_id) ON public.narrow TO {APP};\n"
)


def test_where_a_null_could_change_the_answer_the_probe_writes_for_real_and_finds_the_same(server_dsn):
    with scratch_database(server_dsn, WRITTEN_SQL) as dsn:
        report = services.probe(dsn, GUC)
    for t in ("reads_all", "filled", "whole"):
        v = verdicts(report, t)
        assert all(v[p] == "leak" for p in v if p != "join_other_tenant"), (t, v)
        written = [r for r in report.results if r.table == t and r.command in ("insert", "update")]
        assert written and all(NOT_WRITTEN not in r.detail for r in written), t
    narrow = verdicts(report, "narrow")
    # INSERT needs body, which the role may not insert: refused for the privilege, as before; the UPDATEs of
    # the tenant column alone are allowed and leak, written for real (body may not be set to NULL by the role)
    assert narrow["insert_for_other_tenant"] == "held"
    assert narrow["update_other_tenant"] == "leak" and narrow["move_row_to_other_tenant"] == "leak"
    assert all(NOT_WRITTEN not in r.detail for r in report.results if r.table == "narrow")
    pinned = verdicts(report, "pinned")
    assert pinned["insert_for_other_tenant"] == "leak"  # the INSERT's row was proven valid: NULL is safe there
    assert pinned["update_other_tenant"] == "leak"  # filtered, stopped only by the foreign key: as before
    assert pinned["update_other_tenant_blind"] == pinned["move_row_to_other_tenant_blind"] == "not probed"
    assert [r.probe for r in report.results if r.table == "pinned" and NOT_WRITTEN in r.detail] == [
        "insert_for_other_tenant"
    ]


# --------------------------------------------------------------------------- no room at all on the last page
# The probe's writes target the table's own rows of tenants A and B and write nothing: the UPDATEs set a NOT
# NULL column to NULL, the DELETEs stop on the row the policies let through (filtered: an expression that
# raises, evaluated after the policies; blind: the RETURNING of the one row deleted raises before any foreign
# key action), and the INSERT's candidate row is never inserted by the connecting role to prove it valid.
FULL_TABLES = {
    "open_all": ("true", "true", "true"),  # every write leaks
    # B's rows hidden from SELECT and UPDATE, but the DELETE policy lets A delete them blind
    "blind_delete": (f"tenant_id = {CTX}", f"tenant_id = {CTX}", "true"),
    "sealed_full": (f"tenant_id = {CTX}", f"tenant_id = {CTX}", f"tenant_id = {CTX}"),  # the control
}


def full_table(name: str, using: str, check: str, delete: str) -> str:
    return f"""
CREATE TABLE public.{name} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), body text NOT NULL,
    pad char(1500) NOT NULL DEFAULT 'x');
ALTER TABLE public.{name} ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON public.{name} FOR SELECT TO {APP} USING ({using});
CREATE POLICY i ON public.{name} FOR INSERT TO {APP} WITH CHECK ({check});
CREATE POLICY u ON public.{name} FOR UPDATE TO {APP} USING ({using}) WITH CHECK ({check});
CREATE POLICY d ON public.{name} FOR DELETE TO {APP} USING ({delete});
""" + fill(name, room=0)


FULL_SQL = (
    ROLES_SQL
    + TENANTS_SQL
    + "".join(full_table(n, *p) for n, p in FULL_TABLES.items())
    + f"""
-- rows of open_all are referenced: a real DELETE would set these to NULL (new row versions, a larger table)
CREATE TABLE public.lines (id int PRIMARY KEY, order_id bigint REFERENCES public.open_all (id) ON DELETE SET NULL,
    note text NOT NULL);
INSERT INTO public.lines SELECT id, id, 'line' FROM public.open_all;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP};
"""
)


@pytest.fixture(scope="module")
def full(server_dsn):
    with scratch_database(server_dsn, FULL_SQL, "VACUUM FULL", "VACUUM ANALYZE", "CHECKPOINT") as dsn:
        with psycopg.connect(dsn) as conn:
            last_page_room = {
                t: conn.execute(
                    f"select count(*) filter (where (ctid::text::point)[0] = 0) - count(*) filter (where"
                    f" (ctid::text::point)[0] = (select max((ctid::text::point)[0]) from public.{t})) from public.{t}"
                ).fetchone()[0]
                for t in FULL_TABLES
            }
            lines_before = conn.execute("select count(*), count(order_id) from public.lines").fetchone()
        before = sizes(dsn, FULL_TABLES)
        report = services.probe(dsn, GUC)
        after = sizes(dsn, FULL_TABLES)
        with psycopg.connect(dsn) as conn:
            lines_after = conn.execute("select count(*), count(order_id) from public.lines").fetchone()
    return last_page_room, before, report, after, (lines_before, lines_after)


def test_every_last_page_is_full(full):
    assert set(full[0].values()) == {0}, full[0]


def test_writes_on_full_tables_are_proven_and_nothing_grows(full):
    _, before, report, after, lines = full
    assert after == before
    assert lines[0] == lines[1] == (lines[0][0], lines[0][0])  # no ON DELETE SET NULL ran
    open_all, blind, sealed = (verdicts(report, t) for t in FULL_TABLES)
    assert set(open_all.values()) == {"leak"}, open_all
    assert blind["delete_other_tenant_blind"] == "leak", blind
    assert blind["delete_other_tenant"] == blind["update_other_tenant_blind"] == "held", blind
    assert blind["select_other_tenant"] == "held", blind
    assert set(sealed.values()) == {"held"}, sealed


def test_the_delete_witness_says_the_statement_was_stopped_on_the_row(full):
    report = full[2]
    deletes = [r for r in report.results if r.command == "delete" and not r.isolated and r.table in FULL_TABLES]
    assert {(r.table, r.probe) for r in deletes} == {
        ("open_all", "delete_other_tenant"),
        ("open_all", "delete_other_tenant_blind"),
        ("blind_delete", "delete_other_tenant_blind"),
    }
    for r in deletes:
        assert "stopped the statement on that row" in r.detail and r.rows == 1, r.detail
    held = [r for r in report.results if r.command == "delete" and r.isolated and r.table in FULL_TABLES]
    assert held and all("deleted none of the tenant B rows" in r.detail for r in held), [r.detail for r in held]


def test_a_row_the_application_holds_locked_is_not_waited_for(server_dsn):
    """The writes that stop before the row is written never wait for a lock on it; the blind DELETE, which
    deletes the row its cursor stands on, meets the lock timeout and proves the leak on a fresh test row."""
    config = GUC.model_copy(update={"lock_timeout_ms": 300})
    # the holder is the application, in the middle of a transaction on B's rows
    with scratch_database(server_dsn, FULL_SQL) as dsn, psycopg.connect(dsn) as holder:
        locked = holder.execute(
            f"select count(*) from (select 1 from public.open_all where tenant_id = '{TENANT_B}' for update) s"
        ).fetchone()[0]
        report = services.probe(dsn, config, tables=["open_all"])
        holder.rollback()
    assert locked > 0
    v = verdicts(report, "open_all")
    assert set(v.values()) == {"leak"}, v
    blind = next(r for r in report.results if r.probe == "delete_other_tenant_blind")
    assert "deleted 1 row of tenant B" in blind.detail, blind.detail  # the real DELETE of the fresh row
    stopped = next(r for r in report.results if r.probe == "delete_other_tenant")
    assert "stopped the statement on that row" in stopped.detail, stopped.detail


# --------------------------------------------------------------------------- tables without rows of A or B
TENANT_D = "00000000-0000-0000-0000-00000000000d"
SPARSE_SQL = (
    ROLES_SQL
    + TENANTS_SQL
    + f"""
INSERT INTO public.tenants VALUES ('{TENANT_D}', 'D');
CREATE TABLE public.others (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), body text NOT NULL);
CREATE TABLE public.others_sealed (LIKE public.others INCLUDING ALL);
ALTER TABLE public.others_sealed ADD FOREIGN KEY (tenant_id) REFERENCES public.tenants (id);
CREATE TABLE public.empty_leaky (LIKE public.others INCLUDING ALL);
ALTER TABLE public.empty_leaky ADD FOREIGN KEY (tenant_id) REFERENCES public.tenants (id);
-- rows of tenants C and D only: none of A or B
INSERT INTO public.others (tenant_id, body) VALUES ('{TENANT_C}', 'c'), ('{TENANT_D}', 'd');
INSERT INTO public.others_sealed (tenant_id, body) VALUES ('{TENANT_C}', 'c'), ('{TENANT_D}', 'd');
ALTER TABLE public.others ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.others FOR ALL TO {APP} USING (true) WITH CHECK (true);
ALTER TABLE public.others_sealed ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.others_sealed FOR ALL TO {APP} USING (tenant_id = {CTX}) WITH CHECK (tenant_id = {CTX});
ALTER TABLE public.empty_leaky ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.empty_leaky FOR ALL TO {APP} USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP};
"""
)
SPARSE = ("others", "others_sealed", "empty_leaky")


def probed_sparse(server_dsn, test_rows: bool):
    with scratch_database(server_dsn, SPARSE_SQL, "VACUUM ANALYZE", "CHECKPOINT") as dsn:
        before = sizes(dsn, SPARSE)[:2]
        report = services.probe(dsn, GUC, test_rows=test_rows)
        after = sizes(dsn, SPARSE)[:2]
    return before, report, after


def test_another_tenants_rows_stand_in_for_a_tenant_without_rows(server_dsn):
    _, report, _ = probed_sparse(server_dsn, True)
    others, sealed = verdicts(report, "others"), verdicts(report, "others_sealed")
    assert set(others.values()) == {"leak"} and set(sealed.values()) == {"held"}, (others, sealed)
    leak = next(r for r in report.results if r.table == "others" and r.probe == "select_other_tenant")
    assert f"tenant {TENANT_C} stands in for B ({TENANT_B})" in leak.detail, leak.detail
    assert f"tenant {TENANT_D} stands in for A ({TENANT_A})" in leak.detail, leak.detail
    # only the empty table needed a test row, and the report says how much larger it is now
    assert list(report.test_rows) == ["public.empty_leaky"] and report.test_rows["public.empty_leaky"] > 0
    assert any("public.empty_leaky" in w and "bytes larger" in w for w in report.warnings), report.warnings
    assert set(verdicts(report, "empty_leaky").values()) == {"leak"}


def test_without_test_rows_nothing_is_inserted_and_nothing_grows(server_dsn):
    before, report, after = probed_sparse(server_dsn, False)
    assert after == before
    assert report.test_rows == {}
    assert set(verdicts(report, "others").values()) == {"leak"}
    assert set(verdicts(report, "others_sealed").values()) == {"held"}
    # the empty table: the INSERT is still proven (it writes nothing); what needs a row of B is not probed
    empty = [n for n in report.not_probed if n.table == "empty_leaky"]
    assert {n.probe for n in empty} >= {"select_other_tenant", "update_other_tenant", "delete_other_tenant_blind"}
    assert all("test rows are off" in n.reason for n in empty), [n.reason for n in empty]
    assert [(r.probe, r.isolated) for r in report.results if r.table == "empty_leaky"] == [
        ("insert_for_other_tenant", False)
    ]


def test_the_cli_takes_no_test_rows(server_dsn, tmp_path):
    from dbguard_pipeline.cli import main

    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text(f"tenant:\n  app_role: {APP}\n", encoding="utf-8")
    out = tmp_path / "report.json"
    with scratch_database(server_dsn, SPARSE_SQL) as dsn:
        code = main(
            ["test-isolation", "--dsn", dsn, "--config", str(cfg), "--no-test-rows", "-q", "--format", "json"]
            + ["--out", str(out)]
        )
    data = json.loads(out.read_text(encoding="utf-8"))
    assert code == 1 and data["test_rows"] == {} and data["summary"]["test_rows"] == 0
    assert {n["table"] for n in data["not_probed"]} == {"empty_leaky"}


def test_tenants_the_user_chose_are_never_stood_in_for(server_dsn):
    with scratch_database(server_dsn, SPARSE_SQL) as dsn:
        report = services.probe(dsn, GUC, tenants=(TENANT_A, TENANT_B))
    assert not any("stands in" in r.detail for r in report.results)
    assert set(verdicts(report, "others").values()) == {"leak"}
    assert {"public.others", "public.others_sealed"} <= set(report.test_rows)  # test rows of A and B instead


def test_the_pages_a_test_row_adds_to_an_empty_table_are_the_ones_its_first_row_takes(server_dsn):
    """Where the probe still grows a table (an empty one needs a test row of B to prove anything about its
    SELECT policy), it adds the pages the table's own first row takes anyway: no bloat."""
    with scratch_database(server_dsn, SPARSE_SQL, "VACUUM ANALYZE") as dsn:
        size = "select pg_total_relation_size('public.empty_leaky')"
        with psycopg.connect(dsn, autocommit=True) as conn:
            empty = conn.execute(size).fetchone()[0]
        report = services.probe(dsn, GUC)
        with psycopg.connect(dsn, autocommit=True) as conn:
            probed = conn.execute(size).fetchone()[0]
            conn.execute(f"insert into public.empty_leaky (tenant_id, body) values ('{TENANT_A}', 'the first row')")
            first_row = conn.execute(size).fetchone()[0]
    assert probed > empty and report.test_rows["public.empty_leaky"] == probed - empty
    assert first_row == probed
