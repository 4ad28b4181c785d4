"""generate-migration: templates, naming, determinism, lint, refusals (every test on a real PostgreSQL)."""

from __future__ import annotations

import re

import pglast
import pytest

from dbguard_pipeline.cli import main
from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes import script as mfiles
from dbguard_pipeline.fixes.lint import lint_texts
from dbguard_pipeline.fixes.sql import pg_name

from .conftest import run_sql
from .migrations_helpers import plan

DEMO_ACTIONS = [
    ("fix-rls-policy", "profiles", ()),
    ("fix-rls-policy", "garages", ()),
    ("add-tenant-isolation", "conversation_messages", ()),
    ("add-composite-index", "event_photos", ("image_id",)),
    ("add-foreign-key", "vehicle_spec_enhancements", ()),
]


def test_every_action_on_the_demo_passes_squawk_with_zero_violations_and_parses(demo_dsn):
    migrations = [plan(demo_dsn, a, t, args) for a, t, args in DEMO_ACTIONS]
    texts = mfiles.rendered(migrations, "20250101000000")
    assert len(texts) == 2 * len(DEMO_ACTIONS)
    result = lint_texts(texts)
    assert result.violations == [], "\n".join(map(str, result.violations))
    assert result.parse_errors == []
    assert result.squawk_version == "2.70.0"
    for name, text in texts.items():
        assert pglast.parse_sql(text), name
        assert text.index("SET lock_timeout") < text.index("BEGIN;") if "BEGIN;" in text else True
        assert "SET statement_timeout" in text


def test_lint_catches_unsafe_sql(tmp_path):
    """The linter is not a rubber stamp: a blocking index build and a validated foreign key are reported."""
    result = lint_texts(
        {"bad.sql": "CREATE INDEX i ON t (a);\nALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES u (id);\n"}
    )
    rules = {v.rule for v in result.violations}
    assert "require-concurrent-index-creation" in rules
    assert "adding-foreign-key-constraint" in rules or "constraint-missing-not-valid" in rules
    assert lint_texts({"broken.sql": "CREAT TABLE x ();"}).parse_errors


def test_squawk_is_told_the_server_version():
    """The CLI and the Dagster job lint through services.lint_fixes, which passes the audited server's version."""
    from dbguard_pipeline.fixes.lint import squawk_pg_version

    assert squawk_pg_version("16.2") == "16.2"
    assert squawk_pg_version("15.8 (Ubuntu 15.8-1.pgdg22.04+1)") == "15.8"
    assert squawk_pg_version("17") == "17.0"
    assert squawk_pg_version("") is None


def test_same_database_and_action_give_the_same_bytes(demo_dsn):
    for action, table, args in DEMO_ACTIONS:
        a = plan(demo_dsn, action, table, args)
        b = plan(demo_dsn, action, table, args)
        ta, tb = mfiles.rendered([a], "20250101000000"), mfiles.rendered([b], "20260202020202")
        assert list(ta.values()) == list(tb.values()), action
        assert [n[14:] for n in ta] == [n[14:] for n in tb]
        for text in ta.values():
            assert not re.search(r"20\d\d-\d\d-\d\d", text), "no timestamp in the body"


def test_file_names_follow_the_supabase_convention(demo_dsn):
    m = plan(demo_dsn, "add-tenant-isolation", "conversation_messages")
    assert m.file_names("20250102030405") == (
        "20250102030405_add_tenant_isolation_conversation_messages.sql",
        "20250102030405_add_tenant_isolation_conversation_messages_rollback.sql",
    )


def test_fix_rls_policy_sql_shape(demo_dsn):
    m = plan(demo_dsn, "fix-rls-policy", "profiles")
    fwd, rb = m.render_forward(), m.render_rollback()
    assert 'DROP POLICY IF EXISTS "Enable read access for all users" ON "public"."profiles";' in fwd
    # the weak SELECT policy is rewritten as a SELECT policy for the same roles (never FOR ALL: no widening),
    # pinning the tenant the way the demo's correct policies do (the GUC with NULLIF)
    assert (
        'CREATE POLICY "Enable read access for all users" ON "public"."profiles"\n    AS PERMISSIVE FOR SELECT\n'
        "    TO PUBLIC\n    USING ((tenant_id = ( SELECT (NULLIF(current_setting('app.current_tenant_id'" in fwd
    )
    assert "FOR ALL" not in fwd and "WITH CHECK" not in fwd
    # the rollback recreates the dropped policy as it was: PUBLIC, SELECT, USING (true)
    assert (
        'CREATE POLICY "Enable read access for all users" ON "public"."profiles"\n    AS PERMISSIVE FOR SELECT\n    TO PUBLIC\n    USING (true);'
        in rb
    )
    assert "dbguard:fixes" in fwd


def test_garages_gets_rls_enabled_and_rollback_disables_it(demo_dsn):
    m = plan(demo_dsn, "fix-rls-policy", "garages")
    assert 'ALTER TABLE "public"."garages" ENABLE ROW LEVEL SECURITY;' in m.render_forward()
    assert 'ALTER TABLE "public"."garages" DISABLE ROW LEVEL SECURITY;' in m.render_rollback()
    assert "FORCE" not in m.render_forward()


def test_force_row_level_security_when_the_app_role_owns_its_tables(demo_dsn):
    cfg = Config(tenant=TenantModel(app_role_owns_tables=True))
    m = plan(demo_dsn, "fix-rls-policy", "garages", config=cfg)
    assert "FORCE ROW LEVEL SECURITY" in m.render_forward()
    assert "NO FORCE ROW LEVEL SECURITY" in m.render_rollback()


def test_jwt_tenant_context():
    from dbguard_pipeline.fixes.sql import tenant_context

    assert (
        tenant_context(Config(tenant=TenantModel(context="jwt")), "uuid")
        == "(SELECT (auth.jwt() ->> 'tenant_id')::uuid)"
    )
    # a dotted claim is nested: a JSON path, also in the column default (no subquery there)
    nested = Config(tenant=TenantModel(context="jwt", jwt_claim="app_metadata.brewery"))
    assert tenant_context(nested, "uuid", for_default=True) == "(auth.jwt() -> 'app_metadata' ->> 'brewery')::uuid"


def test_add_tenant_isolation_sql_is_live_safe(demo_dsn):
    m = plan(demo_dsn, "add-tenant-isolation", "conversation_messages")
    fwd = m.render_forward()
    order = [
        fwd.index(s)
        for s in (
            'ADD COLUMN IF NOT EXISTS "tenant_id" uuid;',
            "DO $dbguard$",
            'CHECK ("tenant_id" IS NOT NULL) NOT VALID;',
            'REFERENCES "public"."tenants" ("id") NOT VALID;',
            'VALIDATE CONSTRAINT "conversation_messages_tenant_id_fkey";',
            'VALIDATE CONSTRAINT "conversation_messages_tenant_id_not_null";',
            'ALTER COLUMN "tenant_id" SET NOT NULL;',
            'CREATE INDEX CONCURRENTLY IF NOT EXISTS "conversation_messages_tenant_id_idx"',
            "ENABLE ROW LEVEL SECURITY;",
        )
    ]
    assert order == sorted(order)
    # the backfill goes through the foreign key to conversations, in batches along the primary key bounded at
    # the start (no rescans), committing each; new rows without a tenant get their parent's (the fill trigger)
    assert 'JOIN "public"."conversations" AS p1 ON p1."id" = s0."conversation_id"' in fwd
    assert "LIMIT 5000" in fwd and "high_key" in fwd and "COMMIT;\n    END LOOP;" in fwd
    assert 'BEFORE INSERT ON "public"."conversation_messages" FOR EACH ROW' in fwd
    # CONCURRENTLY and the backfill are marked to run outside a transaction, never inside BEGIN/COMMIT
    for stmt in ("DO $dbguard$", "CREATE INDEX CONCURRENTLY"):
        before = fwd[: fwd.index(stmt)]
        assert before.rstrip().endswith("-- dbguard:no-transaction")
        assert len(re.findall(r"(?m)^BEGIN;$", before)) == len(re.findall(r"(?m)^COMMIT;$", before))


def test_composite_index_name_is_deterministic_and_fits_63_bytes(empty_dsn):
    long_col = "c" * 63
    other = "d" * 63
    table = "t" * 63
    run_sql(empty_dsn, f'create table "{table}" (id int primary key, "{long_col}" int, "{other}" int)')
    a = plan(empty_dsn, "add-composite-index", table, (long_col, other))
    b = plan(empty_dsn, "add-composite-index", table, (other, long_col))
    name_a = re.search(r'INDEX CONCURRENTLY IF NOT EXISTS "([^"]+)"', a.render_forward()).group(1)
    name_b = re.search(r'INDEX CONCURRENTLY IF NOT EXISTS "([^"]+)"', b.render_forward()).group(1)
    assert len(name_a.encode()) <= 63 and len(name_b.encode()) <= 63
    assert name_a != name_b and name_a.endswith("_idx")
    assert name_a == re.search(
        r'"([^"]+)"',
        plan(empty_dsn, "add-composite-index", table, (long_col, other))
        .render_forward()
        .split("CONCURRENTLY IF NOT EXISTS ")[1],
    ).group(1)
    uni = pg_name("é" * 40, "idx")
    assert len(uni.encode()) <= 63 and uni.encode().decode() == uni  # never cut inside a character


def test_nothing_to_fix_says_so_and_writes_nothing(demo_dsn, tmp_path, capsys):
    out = tmp_path / "migrations"
    for argv in (
        ["fix-rls-policy", "public.vision_metrics"],
        ["add-composite-index", "vehicles", "garage_id"],
        ["add-foreign-key", "vehicles", "garages"],
    ):
        rc = main(["generate-migration", *argv, "--dsn", demo_dsn, "--out-dir", str(out)])
        assert rc == 0
        assert "nothing to fix" in capsys.readouterr().out
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.integration
def test_add_foreign_key_reports_orphans_with_their_count_before_writing(demo_dsn, tmp_path, capsys):
    run_sql(
        demo_dsn,
        """insert into public.vehicle_spec_enhancements (id, tenant_id, vehicle_id, spec, source)
        select gen_random_uuid(), gen_random_uuid(), (select id from public.vehicles limit 1), '{}', 'orphan'
        from generate_series(1, 3)""",
    )
    out = tmp_path / "m"
    rc = main(
        ["generate-migration", "add-foreign-key", "vehicle_spec_enhancements", "--dsn", demo_dsn, "--out-dir", str(out)]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert "3 rows of public.vehicle_spec_enhancements reference a missing public.tenants row" in err
    assert not out.exists()


def test_add_foreign_key_infers_the_referenced_table(demo_dsn):
    run_sql(demo_dsn, "alter table public.event_photos drop constraint event_photos_image_id_fkey")
    m = plan(demo_dsn, "add-foreign-key", "event_photos")
    fwd = m.render_forward()
    assert 'FOREIGN KEY ("image_id") REFERENCES "public"."vehicle_images" ("id") NOT VALID;' in fwd
    assert 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "event_photos_image_id_idx"' in fwd  # no index leads with it
    m2 = plan(demo_dsn, "add-foreign-key", "vehicle_spec_enhancements")
    assert 'FOREIGN KEY ("tenant_id") REFERENCES "public"."tenants" ("id") NOT VALID;' in m2.render_forward()
    assert "CREATE INDEX" not in m2.render_forward()  # vehicle_spec_enhancements_tenant_id_idx exists


def test_fix_rls_policy_on_a_table_without_the_tenant_column_points_to_add_tenant_isolation(demo_dsn):
    with pytest.raises(DbguardError, match="run add-tenant-isolation public.conversation_messages first"):
        plan(demo_dsn, "fix-rls-policy", "conversation_messages")


def test_add_tenant_isolation_without_a_path_requires_a_default(demo_dsn):
    run_sql(
        demo_dsn,
        "create table public.notes (id bigint primary key, body text not null);"
        "insert into public.notes select g, 'n' || g from generate_series(1, 10) g",
    )
    with pytest.raises(DbguardError, match="--tenant-default"):
        plan(demo_dsn, "add-tenant-isolation", "notes")
    with pytest.raises(DbguardError, match="no such tenant"):
        plan(demo_dsn, "add-tenant-isolation", "notes", tenant_default="00000000-0000-0000-0000-000000000000")
    with pytest.raises(DbguardError, match="not a valid uuid"):
        plan(demo_dsn, "add-tenant-isolation", "notes", tenant_default="not-a-uuid")


def test_add_tenant_isolation_refuses_rows_that_reach_no_tenant(demo_dsn):
    run_sql(
        demo_dsn,
        "alter table public.conversation_messages alter column conversation_id drop not null;"
        "update public.conversation_messages set conversation_id = null where body like '%' "
        "and id in (select id from public.conversation_messages order by id limit 2)",
    )
    with pytest.raises(DbguardError, match="2 rows of public.conversation_messages reach no tenant"):
        plan(demo_dsn, "add-tenant-isolation", "conversation_messages")


def test_cli_bad_input_is_one_line_and_exit_2(demo_dsn, tmp_path, capsys):
    cases = [
        (["generate-migration", "drop-everything", "profiles"], "unknown action"),
        (["generate-migration", "fix-rls-policy", "no_such_table"], "table not found"),
        (["generate-migration", "add-composite-index", "vehicles", "nope"], "has no column 'nope'"),
        (["generate-migration", "add-composite-index", "vehicles"], "needs at least one column"),
        (["generate-migration", "--all", "fix-rls-policy", "profiles"], "either --all"),
        (["generate-migration", "fix-rls-policy", "profiles", "--timestamp", "yesterday"], "YYYYMMDDHHMMSS"),
    ]
    for argv, expected in cases:
        rc = main([*argv, "--dsn", demo_dsn, "--out-dir", str(tmp_path / "m")])
        err = capsys.readouterr().err
        assert rc == 2, argv
        assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.security
def test_a_newline_in_a_table_name_cannot_escape_the_header_comment(empty_dsn):
    name = "evil\nDROP TABLE victim; --"
    run_sql(
        empty_dsn,
        "create table victim (id int);"
        "create table public.tenants (id uuid primary key);"
        f'create table public."{name.replace(chr(34), chr(34) * 2)}" (id uuid primary key, '
        "tenant_id uuid not null references public.tenants (id))",
    )
    # no policy to learn the tenant idiom from: the config names it
    m = plan(empty_dsn, "fix-rls-policy", name, config=Config(tenant=TenantModel(context="guc")))
    from pglast import ast
    from pglast.enums import ObjectType

    for text in (m.render_forward(), m.render_rollback()):
        for raw in pglast.parse_sql(text):
            node = raw.stmt
            assert not (isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_TABLE)
        assert (
            '-- dbguard migration: fix-rls-policy on "public"."evil\\x0aDROP TABLE victim; --"' in text
            or 'undoes fix-rls-policy on "public"."evil\\x0aDROP TABLE victim; --"' in text
        )


def _snapshot(*tables):
    from dbguard_pipeline.model.schema import Snapshot

    return Snapshot(
        database="d",
        server_version="16.2",
        server_version_num=160002,
        current_user="u",
        taken_at="",
        schemas=("public", "other"),
        tables=tuple(tables),
    )


def _table(name, *columns, pk="id", schema="public", kind="table", unique=None):
    from dbguard_pipeline.model.schema import Column, Constraint, Table

    cons = []
    if pk:
        cons.append(Constraint(f"{name}_pkey", "primary_key", (pk,)))
    if unique:
        cons.append(Constraint(f"{name}_{unique}_key", "unique", (unique,)))
    cols = tuple(Column(n, t, False) for n, t in columns)
    return Table(
        schema=schema,
        name=name,
        kind=kind,
        owner="o",
        rls_enabled=False,
        rls_forced=False,
        row_estimate=0,
        columns=cols,
        constraints=tuple(cons),
    )


def test_one_foreign_key_inference_for_the_data_checks_and_the_generator():
    """semantics.references.infer_parent: the same answer for pg/metrics.py and add-foreign-key."""
    from dbguard_pipeline.semantics.references import infer_parent

    child = _table(
        "event_photos",
        ("id", "uuid"),
        ("image_id", "uuid"),
        ("box_id", "uuid"),
        ("category_id", "integer"),
        ("label_id", "text"),
        ("event_id", "uuid"),
        ("part_id", "uuid"),
    )
    snap = _snapshot(
        child,
        _table("vehicle_images", ("id", "uuid")),  # image_id: the only *_images table of the schema
        _table("box", ("id", "uuid")),
        _table("boxes", ("id", "uuid")),  # box_id: the plural first
        _table("categories", ("id", "bigint")),  # integer -> bigint: compatible
        _table("labels", ("id", "uuid")),  # text -> uuid: not a reference
        _table("vehicle_events", ("id", "uuid")),
        _table("audit_events", ("id", "uuid")),  # two *_events: ambiguous
        _table("parts", ("code", "uuid"), pk=None, unique="code"),  # no primary key: its single-column unique key
    )

    def parent(col):
        found = infer_parent(snap, child, col)
        return found and (found[0].qualified, found[1])

    assert parent("image_id") == ("public.vehicle_images", "id")
    assert parent("box_id") == ("public.boxes", "id")
    assert parent("category_id") == ("public.categories", "id")
    assert parent("label_id") is None
    assert parent("event_id") is None
    assert parent("part_id") == ("public.parts", "code")
    assert parent("id") is None


def test_foreign_key_inference_skips_partitions_and_prefers_the_same_schema():
    from dbguard_pipeline.semantics.references import infer_parent

    child = _table("orders", ("id", "uuid"), ("customer_id", "uuid"), ("shop_id", "uuid"))
    snap = _snapshot(
        child,
        _table("customers", ("id", "uuid"), schema="other"),
        _table("customers", ("id", "uuid")),
        _table("shops", ("id", "uuid"), kind="partition"),
    )
    assert infer_parent(snap, child, "customer_id")[0].qualified == "public.customers"
    assert infer_parent(snap, child, "shop_id") is None
