"""policy/bodies.py on its own: which tables a SQL or PL/pgSQL function body reads and writes, and whether
each access is tied to the caller (the judgment of security_definer_reads_other_tenants). The bodies are
parsed by PostgreSQL's parser (pglast); no database is needed (the rule's cases run on the real server:
dbguard_tests/rules/cases/security_definer_reads_other_tenants.yaml)."""

from __future__ import annotations

from typing import Optional

import pytest

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.schema import Column, Function, Snapshot, Table
from dbguard_pipeline.policy import Analyzer
from dbguard_pipeline.policy.bodies import body_accesses
from dbguard_pipeline.semantics.tenancy import tenant_column

CTX = "nullif(current_setting('app.current_tenant_id', true), '')::uuid"


def table(name: str, *cols: str) -> Table:
    return Table(
        "public", name, "table", "postgres", True, False, 0, columns=tuple(Column(c, "uuid", True) for c in cols)
    )


SNAPSHOT = Snapshot(
    database="d",
    server_version="16",
    server_version_num=160000,
    current_user="postgres",
    taken_at="",
    schemas=("public",),
    tables=(
        table("tenants", "id", "name"),
        table("secret", "id", "tenant_id", "owner_id", "parent_id"),
        table("members", "user_id", "tenant_id"),
    ),
)
CONFIG = Config()
ANALYZER = Analyzer(SNAPSHOT, CONFIG)


def accesses(body: str, arguments: str = "", language: str = "sql", returns: str = "void") -> Optional[list[tuple]]:
    fn = Function("public", "f", arguments, returns, language, True, "volatile", ("search_path=''",), "postgres", body)
    found = body_accesses(fn, ANALYZER, lambda t: tenant_column(t, CONFIG))
    if found is None:
        return None
    return [(a.table.name, a.command, a.restricted, a.by_parameter) for a in found]


@pytest.mark.parametrize(
    ("body", "arguments", "expected"),
    [
        ("SELECT * FROM public.secret", "", [("secret", "select", False, None)]),
        (f"SELECT * FROM public.secret WHERE tenant_id = {CTX}", "", [("secret", "select", True, None)]),
        ("SELECT * FROM public.secret s WHERE s.tenant_id = p", "p uuid", [("secret", "select", False, "p")]),
        ("SELECT * FROM public.secret s WHERE s.tenant_id = $1", "uuid", [("secret", "select", False, "$1")]),
        ("SELECT * FROM public.secret s WHERE s.tenant_id = f.p", "p uuid", [("secret", "select", False, "p")]),
        # a column of the table wins over a parameter of the same name, as in PostgreSQL's SQL functions
        (
            "SELECT * FROM public.secret WHERE tenant_id = tenant_id",
            "tenant_id uuid",
            [("secret", "select", False, None)],
        ),
        # the caller's identity on another column
        ("SELECT * FROM public.secret WHERE owner_id = auth.uid()", "", [("secret", "select", True, None)]),
        # a membership subquery, and the membership table read in it keyed by the caller
        (
            "SELECT * FROM public.secret WHERE tenant_id IN (SELECT tenant_id FROM public.members WHERE user_id = auth.uid())",
            "",
            [("secret", "select", True, None), ("members", "select", True, None)],
        ),
        # a parameter checked against the caller in the same query
        (
            "SELECT * FROM public.secret s WHERE s.tenant_id = p AND EXISTS (SELECT 1 FROM public.members m "
            "WHERE m.user_id = auth.uid() AND m.tenant_id = p)",
            "p uuid",
            [("secret", "select", True, "p"), ("members", "select", True, "p")],
        ),
        # a join carries the restriction over on the join column, not to an unrelated neighbour
        (
            "SELECT s.* FROM public.secret s JOIN public.members m ON m.tenant_id = s.tenant_id WHERE m.user_id = auth.uid()",
            "",
            [("secret", "select", True, None), ("members", "select", True, None)],
        ),
        (
            f"SELECT s.* FROM public.secret s, public.members m WHERE m.tenant_id = {CTX}",
            "",
            [("secret", "select", False, None), ("members", "select", True, None)],
        ),
        # the preserved side of an outer join is read whole; the nullable side only where ON matches
        (
            "SELECT * FROM public.secret s LEFT JOIN public.members m ON m.tenant_id = s.tenant_id AND m.user_id = auth.uid()",
            "",
            [("secret", "select", False, None), ("members", "select", True, None)],
        ),
        # UNION: each branch on its own
        (
            f"SELECT id FROM public.secret WHERE tenant_id = {CTX} UNION SELECT id FROM public.tenants",
            "",
            [("secret", "select", True, None), ("tenants", "select", False, None)],
        ),
        # writes
        ("UPDATE public.secret SET owner_id = NULL WHERE id = p", "p uuid", [("secret", "update", False, None)]),
        (f"DELETE FROM public.secret WHERE tenant_id = {CTX}", "", [("secret", "delete", True, None)]),
        (
            "MERGE INTO public.secret t USING public.members m ON t.tenant_id = m.tenant_id WHEN MATCHED THEN DELETE",
            "",
            [("secret", "merge", False, None), ("members", "select", False, None)],
        ),
        (
            "MERGE INTO public.secret t USING public.members m ON t.tenant_id = m.tenant_id AND m.user_id = auth.uid() "
            "WHEN MATCHED THEN DELETE",
            "",
            [("secret", "merge", True, None), ("members", "select", True, None)],
        ),
        (
            "INSERT INTO public.secret (id, tenant_id) VALUES (gen_random_uuid(), p)",
            "p uuid",
            [("secret", "insert", False, "p")],
        ),
        (
            f"INSERT INTO public.secret (id, tenant_id) VALUES (gen_random_uuid(), {CTX})",
            "",
            [("secret", "insert", True, None)],
        ),
        # a WITH query whose rows the main query pins, and one nothing pins
        (
            f"WITH x AS (SELECT * FROM public.secret) SELECT * FROM x WHERE x.tenant_id = {CTX}",
            "",
            [("secret", "select", True, None)],
        ),
        ("WITH x AS (SELECT * FROM public.secret) SELECT * FROM x", "", [("secret", "select", False, None)]),
        # a relation dbguard does not know is no access
        ("SELECT * FROM public.unknown_table", "", []),
    ],
)
def test_sql_bodies(body, arguments, expected):
    assert accesses(body, arguments) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # a variable assigned once from the context is that context
        (
            f"DECLARE v uuid; BEGIN v := {CTX}; RETURN QUERY SELECT * FROM public.secret WHERE tenant_id = v; END",
            [("secret", "select", True, None)],
        ),
        # SELECT ... INTO a variable: the count reads every tenant
        (
            "DECLARE n bigint; BEGIN SELECT count(*) INTO n FROM public.secret; RETURN; END",
            [("secret", "select", False, None)],
        ),
        # a guard on the parameter, before the read
        (
            "BEGIN IF NOT EXISTS (SELECT 1 FROM public.members WHERE user_id = auth.uid() AND tenant_id = p) THEN "
            "RAISE EXCEPTION 'no'; END IF; RETURN QUERY SELECT * FROM public.secret WHERE tenant_id = p; END",
            [("members", "select", True, "p"), ("secret", "select", True, "p")],
        ),
        # a guard that only warns checks nothing
        (
            "BEGIN IF NOT EXISTS (SELECT 1 FROM public.members WHERE user_id = auth.uid() AND tenant_id = p) THEN "
            "RAISE NOTICE 'no'; END IF; RETURN QUERY SELECT * FROM public.secret WHERE tenant_id = p; END",
            [("members", "select", True, "p"), ("secret", "select", False, "p")],
        ),
        # a variable assigned twice is unknown: no guess
        (
            f"DECLARE v uuid; BEGIN v := {CTX}; v := p; RETURN QUERY SELECT * FROM public.secret WHERE tenant_id = v; END",
            [("secret", "select", True, None)],
        ),
        # dynamic SQL is not read
        ("BEGIN EXECUTE 'SELECT * FROM public.secret'; RETURN; END", []),
    ],
)
def test_plpgsql_bodies(body, expected):
    found = accesses(body, "p uuid", "plpgsql", "SETOF public.secret")
    assert found is not None and sorted(found) == sorted(expected)


@pytest.mark.parametrize(
    ("body", "language"),
    [
        ("SELECT * FROM public.secret WHERE (((", "sql"),
        ("BEGIN RETURN QUERY SELECT * FROM; END", "plpgsql"),
        ("", "sql"),
        ("SELECT 1", "c"),
        ("BEGIN RETURN 1 $dbguard_body$; END", "plpgsql"),
    ],
)
def test_a_body_that_cannot_be_read_is_no_answer(body, language):
    assert accesses(body, language=language) is None


@pytest.mark.parametrize(
    "body",
    [
        "INSERT INTO public.secret SELECT * FROM public.secret ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id RETURNING (SELECT count(*) FROM public.members)",
        "UPDATE public.secret s SET owner_id = m.user_id FROM public.members m WHERE m.tenant_id = s.tenant_id RETURNING s.id",
        "DELETE FROM public.secret s USING public.members m WHERE m.tenant_id = s.tenant_id",
        "WITH RECURSIVE r(id) AS (SELECT id FROM public.secret UNION ALL SELECT s.id FROM public.secret s JOIN r ON s.parent_id = r.id) SELECT * FROM r",
        "WITH d AS (DELETE FROM public.secret RETURNING *) SELECT count(*) FROM d",
        "SELECT * FROM public.secret s, LATERAL (SELECT * FROM public.members m WHERE m.tenant_id = s.tenant_id) x",
        "SELECT * FROM generate_series(1, 3) g, (VALUES (1), (2)) v(n)",
        "SELECT row_number() OVER (PARTITION BY tenant_id) FROM public.secret GROUP BY GROUPING SETS ((tenant_id), ())",
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM public.members) THEN 1 END",
        "CALL public.p()",
        "CREATE TEMP TABLE x AS SELECT * FROM public.secret",
        "SELECT 1; SELECT 2; TRUNCATE public.secret",
    ],
)
def test_any_statement_is_read_without_crashing(body):
    assert isinstance(accesses(body), list)


def test_plpgsql_loops_cursors_and_exceptions_are_read():
    body = """
    DECLARE r record; c CURSOR FOR SELECT * FROM public.members; n int := 0;
    BEGIN
      FOR r IN SELECT * FROM public.secret LOOP n := n + 1; END LOOP;
      FOREACH n IN ARRAY ARRAY[1, 2] LOOP PERFORM 1; END LOOP;
      OPEN c; CLOSE c;
      BEGIN UPDATE public.tenants SET name = 'x'; EXCEPTION WHEN others THEN NULL; END;
      RETURN;
    END"""
    found = accesses(body, language="plpgsql")
    assert found is not None
    assert {(t, cmd) for t, cmd, _, _ in found} == {
        ("secret", "select"),
        ("members", "select"),
        ("tenants", "update"),
    }
