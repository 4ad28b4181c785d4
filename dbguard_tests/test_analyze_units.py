"""The pure parts of dbguard analyze, without a database: the policy rewrites, the plan reader, the statements."""

from __future__ import annotations

import pytest

from dbguard_pipeline.analyze.plans import context_columns, parse_plan
from dbguard_pipeline.analyze.statements import TenantSample, build
from dbguard_pipeline.analyze.suggest import plan_index, plan_optimize_policy
from dbguard_pipeline.config import Config
from dbguard_pipeline.fixes.rewrite import read_only_body, rewrite
from dbguard_pipeline.model.schema import Column, Constraint, Function, Index, Policy, Snapshot, Table

JWT = Config.model_validate({"tenant": {"context": "jwt"}})


def _table(name: str, policies=(), columns=("id", "tenant_id"), indexes=(), fks=()) -> Table:
    return Table(
        schema="public",
        name=name,
        kind="table",
        owner="postgres",
        rls_enabled=True,
        rls_forced=False,
        row_estimate=1000,
        columns=tuple(Column(c, "uuid" if c != "id" else "bigint", True) for c in columns),
        constraints=(Constraint(f"{name}_pkey", "primary_key", ("id",)), *fks),
        indexes=tuple(indexes),
        policies=tuple(policies),
    )


def _snapshot(*tables: Table, functions=()) -> Snapshot:
    return Snapshot(
        database="db",
        server_version="16.2",
        server_version_num=160002,
        current_user="postgres",
        taken_at="2026-01-01T00:00:00Z",
        schemas=("public", "auth"),
        tables=tables,
        functions=(
            Function("auth", "jwt", "", "jsonb", "sql", False, "stable"),
            Function("auth", "uid", "", "uuid", "sql", False, "stable"),
            *functions,
        ),
    )


@pytest.mark.parametrize(
    ("expr", "expected", "wrapped"),
    [
        (
            "(tenant_id = ((auth.jwt() ->> 'tenant_id'::text))::uuid)",
            "tenant_id = (SELECT CAST(auth.jwt() ->> CAST('tenant_id' AS text) AS uuid))",
            ["auth.jwt()"],
        ),
        (
            "(tenant_id = (NULLIF(current_setting('app.t'::text, true), ''::text))::uuid)",
            "tenant_id = (SELECT CAST(NULLIF(current_setting(CAST('app.t' AS text), TRUE), CAST('' AS text)) AS uuid))",
            ["current_setting()"],
        ),
        (
            "((auth.uid() = owner_id) OR (auth.role() = 'service'::text))",
            "(SELECT auth.uid()) = owner_id OR (SELECT auth.role() = CAST('service' AS text))",
            ["auth.uid()", "auth.role()"],
        ),
    ],
)
def test_per_row_calls_are_wrapped_in_a_scalar_subquery(expr, expected, wrapped):
    t = _table("orders", columns=("id", "tenant_id", "owner_id"))
    rw = rewrite(expr, t, _snapshot(t), JWT)
    assert rw is not None and rw.text == expected and rw.wrapped == wrapped


@pytest.mark.parametrize(
    "expr",
    [
        "(tenant_id = ( SELECT ((auth.jwt() ->> 'tenant_id'::text))::uuid AS uuid))",  # already wrapped
        "(tenant_id = '00000000-0000-0000-0000-000000000000'::uuid)",  # nothing per query
        "(created_at > (now() - '1 day'::interval))",  # no context call
        "(random() < (0.5)::double precision)",  # volatile: wrapping would change its meaning
    ],
)
def test_nothing_to_rewrite(expr):
    t = _table("orders", columns=("id", "tenant_id", "created_at"))
    assert rewrite(expr, t, _snapshot(t), JWT) is None


def test_in_subquery_becomes_an_initplan_array_and_correlated_ones_stay():
    members = _table("memberships", columns=("id", "tenant_id", "user_id"))
    projects = _table("projects")
    snap = _snapshot(members, projects)
    rw = rewrite(
        "(tenant_id IN ( SELECT m.tenant_id FROM public.memberships m WHERE (m.user_id = auth.uid())))",
        projects,
        snap,
        JWT,
    )
    assert rw.text == (
        "tenant_id = ANY(ARRAY(SELECT m.tenant_id FROM public.memberships AS m WHERE m.user_id = (SELECT auth.uid())))"
    )
    assert rw.arrays == ["tenant_id"] and rw.wrapped == ["auth.uid()"]
    correlated = rewrite(
        "(tenant_id IN ( SELECT m.tenant_id FROM public.memberships m WHERE (m.id = projects.id)))", projects, snap, JWT
    )
    assert correlated is None


def test_volatile_helpers_are_wrapped_only_when_declared_stable_and_only_if_they_only_read():
    helper = Function(
        "public",
        "current_tenant_id",
        "",
        "uuid",
        "plpgsql",
        False,
        "volatile",
        body="BEGIN RETURN current_setting('app.t')::uuid; END",
    )
    writer = Function(
        "public",
        "log_and_get",
        "",
        "uuid",
        "plpgsql",
        False,
        "volatile",
        body="BEGIN INSERT INTO log VALUES (1); RETURN null; END",
    )
    assert read_only_body(helper) and not read_only_body(writer)
    t = _table(
        "events", policies=[Policy("p", True, "all", ("authenticated",), "(tenant_id = public.current_tenant_id())")]
    )
    snap = _snapshot(t, functions=(helper, writer))
    assert rewrite(t.policies[0].using, t, snap, JWT) is None
    m = plan_optimize_policy(snap, JWT, "public.events")
    fwd, back = m.render_forward(), m.render_rollback()
    assert 'ALTER FUNCTION "public"."current_tenant_id"() STABLE SET search_path = pg_catalog, "public", pg_temp' in fwd
    assert "USING (tenant_id = (SELECT public.current_tenant_id()))" in fwd
    assert 'ALTER FUNCTION "public"."current_tenant_id"() VOLATILE RESET search_path' in back
    assert "USING ((tenant_id = public.current_tenant_id()))" in back
    assert fwd.count("BEGIN;") == 1  # one transaction


def test_index_plan_is_concurrent_with_its_rollback_and_skips_covered_columns():
    t = _table("events", indexes=[Index("events_pkey", ("id",), "CREATE UNIQUE INDEX ...", unique=True, primary=True)])
    snap = _snapshot(t)
    m = plan_index(snap, Config(), "public.events", ("tenant_id",), ["missing_tenant_index:public.events:tenant_id"])
    assert (
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS "events_tenant_id_idx" ON "public"."events" ("tenant_id")'
        in m.render_forward()
    )
    assert 'DROP INDEX CONCURRENTLY IF EXISTS "public"."events_tenant_id_idx"' in m.render_rollback()
    assert "-- dbguard:fixes missing_tenant_index:public.events:tenant_id" in m.render_forward()
    assert plan_index(snap, Config(), "public.events", ("id",)) is None


def test_plan_reader_counts_rows_per_loop_and_knows_subplans():
    doc = [
        {
            "Plan": {
                "Node Type": "Aggregate",
                "Actual Rows": 1,
                "Actual Loops": 1,
                "Plans": [
                    {
                        "Node Type": "Seq Scan",
                        "Parent Relationship": "Outer",
                        "Relation Name": "projects",
                        "Schema": "public",
                        "Alias": "t",
                        "Filter": "(hashed SubPlan 2)",
                        "Actual Rows": 250,
                        "Actual Loops": 1,
                        "Rows Removed by Filter": 4750,
                        "Plans": [
                            {
                                "Node Type": "Seq Scan",
                                "Parent Relationship": "SubPlan",
                                "Subplan Name": "SubPlan 2",
                                "Relation Name": "memberships",
                                "Schema": "public",
                                "Alias": "m",
                                "Filter": "(m.user_id = $0)",
                                "Actual Rows": 1,
                                "Actual Loops": 1,
                                "Rows Removed by Filter": 9999,
                            }
                        ],
                    }
                ],
            },
            "Planning Time": 0.2,
            "Execution Time": 3.5,
        }
    ]
    plan = parse_plan(doc)
    assert plan.analyzed and plan.execution_ms == 3.5 and plan.aggregated_rows() == 250
    scan, sub = plan.nodes[1], plan.nodes[2]
    assert (scan.examined, scan.kept, scan.in_subplan) == (5000, 250, False)
    assert (sub.relation, sub.examined, sub.in_subplan) == ("public.memberships", 10000, True)
    assert context_columns(sub.filter) == ["user_id"]
    assert context_columns("((InitPlan 1).col1 = user_id)") == ["user_id"]
    assert context_columns("(m.user_id = auth.uid())") == ["user_id"]
    assert context_columns("(tenant_id = 'x'::uuid)") == []


def test_statements_use_the_explicit_predicate_for_the_owner_and_the_path_for_child_tables():
    parent = _table("customers")
    child = _table(
        "contacts",
        columns=("id", "customer_id"),
        fks=(
            Constraint(
                "contacts_customer_id_fkey",
                "foreign_key",
                ("customer_id",),
                ref_schema="public",
                ref_table="customers",
                ref_columns=("id",),
            ),
        ),
    )
    snap = _snapshot(parent, child)
    from dbguard_pipeline.semantics import tenancy

    path = tenancy.tenant_path(snap, child, JWT)
    sample = TenantSample("0ec75ff4-d279-61c9-a231-5e49a591d10e", "uuid", ("7",), ("bigint",))
    stmts = {s.name: s for s in build(child, path, sample, JWT)}
    assert list(stmts) == ["count", "page", "lookup", "join"]
    text = {k: (s.app.as_string(None), s.owner.as_string(None)) for k, s in stmts.items()}
    assert text["count"][0] == 'SELECT count(*) FROM "public"."contacts" AS "t"'
    assert text["count"][1] == (
        'SELECT count(*) FROM "public"."contacts" AS "t" WHERE "t"."customer_id" IN '
        '(SELECT "p1"."id" FROM "public"."customers" AS "p1" WHERE "p1"."tenant_id" = '
        "CAST('0ec75ff4-d279-61c9-a231-5e49a591d10e' AS uuid))"
    )
    assert text["lookup"][0].endswith('WHERE "t"."id" = CAST(\'7\' AS bigint)')
    assert text["join"][1].endswith('WHERE "p0"."tenant_id" = CAST(\'0ec75ff4-d279-61c9-a231-5e49a591d10e\' AS uuid)')
    assert "LIMIT 50" in text["page"][0] and 'ORDER BY "t"."id"' in text["page"][1]
