"""`dbguard diff`: schema differences between two databases or snapshots, and what weakens tenant isolation."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from psycopg import sql

from dbguard_pipeline.cli import main
from dbguard_pipeline.config import Config
from dbguard_pipeline.diff import Change, SnapshotDiff, describe_change, diff_snapshots, render
from dbguard_pipeline.model.schema import Role
from dbguard_pipeline.model.snapshot_json import dump_snapshot
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.dsn import describe_dsn, parse_dsn
from dbguard_pipeline.pg.session import connect

from .conftest import SECRET, _as_user, run_sql
from .test_cli_foundation import assert_one_line_error, dbguard

TENANT = "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"

# Applied to both copies, so that the tests can change them in one copy only.
FUNCTIONS = """
create function public.tenant_of(v uuid) returns uuid language sql stable set search_path = ''
  as $$ select tenant_id from public.vehicles where id = v $$;
create function public.touch() returns int language sql security definer set search_path = '' as 'select 1';
"""

WEAKENING = """
alter table public.vision_metrics disable row level security;
drop policy vision_accuracy_tenant_isolation on public.vision_accuracy;
create policy vision_accuracy_tenant_isolation on public.vision_accuracy for all to authenticated
  using (true) with check (true);
grant select on public.vehicle_overview to anon;
alter view public.vehicle_overview set (security_invoker = false);
alter table public.photo_metadata alter column tenant_id drop not null;
alter table public.vehicle_events drop constraint vehicle_events_tenant_id_fkey;
alter function public.tenant_of(uuid) reset search_path;
grant select on public.tenants to public;
"""

NEUTRAL = """
alter table public.vehicles add column color text not null default 'red';
drop index public.garages_tenant_id_idx;
alter function public.touch() set search_path = pg_catalog;
revoke delete on public.garages from anon;
"""

FIX_GARAGES = f"""
alter table public.garages enable row level security;
create policy garages_tenant_isolation on public.garages for all to authenticated
  using (tenant_id = {TENANT}) with check (tenant_id = {TENANT});
"""


@pytest.fixture
def pair(demo_dsn, databases, demo_template):
    """Two fresh copies of the demo database (A = before / source, B = after / target)."""
    return demo_dsn, databases.create(template=demo_template)


def diff_of(a_dsn: str, b_dsn: str, config: Config | None = None) -> SnapshotDiff:
    return diff_snapshots(introspect(a_dsn), introspect(b_dsn), config or Config(), source="A", target="B")


def one(d: SnapshotDiff, **kw) -> Change:
    found = [c for c in d.changes if all(getattr(c, k) == v for k, v in kw.items())]
    assert len(found) == 1, (kw, [describe_change(c) for c in d.changes])
    return found[0]


def attrs(c: Change) -> dict:
    return {a.attribute: (a.before, a.after) for a in c.attributes}


# --------------------------------------------------------------------------- core
def test_identical_demo_copies_have_no_differences(pair):
    a, b = pair
    d = diff_of(a, b)
    assert d.identical and d.changes == () and d.new_findings == () and not d.weakens_isolation
    assert render(d, "text").rstrip().endswith("no differences")
    assert json.loads(render(d, "json"))["summary"]["identical"] is True


def test_taken_at_row_estimates_and_positions_are_ignored(demo_dsn):
    a = introspect(demo_dsn)
    tables = tuple(
        replace(
            t,
            row_estimate=t.row_estimate + 1000,
            columns=tuple(replace(c, position=c.position + 10) for c in t.columns),
        )
        for t in a.tables
    )
    b = replace(a, taken_at="2001-01-01T00:00:00+00:00", database="elsewhere", tables=tables)
    assert diff_snapshots(a, b, Config()).identical


@pytest.mark.security
def test_weakening_changes_are_reported_precisely_and_flagged(pair):
    a, b = pair
    run_sql(a, FUNCTIONS)
    run_sql(b, FUNCTIONS + WEAKENING)
    d = diff_of(a, b)

    rls = one(d, name="vision_metrics", item_type="rls")
    assert attrs(rls) == {"rls_enabled": (True, False)} and rls.weaker
    assert rls.reasons == ("row level security disabled",)

    pol = one(d, name="vision_accuracy", item_type="policy", item="vision_accuracy_tenant_isolation")
    assert pol.change == "changed" and set(attrs(pol)) == {"using", "with_check"}
    assert attrs(pol)["using"][1] == "true" and "current_setting" in attrs(pol)["using"][0]
    assert pol.weaker
    assert "USING no longer pins the tenant: it is always true" in pol.reasons
    assert "WITH CHECK no longer pins the tenant: it is always true" in pol.reasons
    assert "now flagged weak_rls_policy" in pol.reasons

    grant = one(d, object_type="view", name="vehicle_overview", item_type="grant", item="anon")
    assert grant.change == "added" and grant.after == ("SELECT",) and grant.weaker
    public = one(d, name="tenants", item_type="grant", item="public")
    assert public.weaker and public.reasons == ("SELECT granted to PUBLIC",)

    view = one(d, object_type="view", name="vehicle_overview", item_type="view")
    assert attrs(view) == {"security_invoker": (True, False)} and view.weaker
    assert "now flagged security_definer_view" in view.reasons

    col = one(d, name="photo_metadata", item_type="column", item="tenant_id")
    assert attrs(col) == {"not_null": (True, False)} and col.reasons == ("tenant column now allows NULL",)

    fk = one(d, name="vehicle_events", item_type="constraint", item="vehicle_events_tenant_id_fkey")
    assert fk.change == "removed" and fk.weaker and "REFERENCES public.tenants(id)" in fk.before.definition

    fn = one(d, object_type="function", name="tenant_of")
    assert fn.arguments == "v uuid" and attrs(fn) == {"config": (('search_path=""',), ())}
    assert fn.weaker and "no longer sets search_path" in fn.reasons[0]

    assert len(d.weaker_changes) == 8 and d.weakens_isolation
    new = {f.cache_key for f in d.new_findings}
    assert {
        "rls_disabled_with_tenant_column:public.vision_metrics",
        "weak_rls_policy:public.vision_accuracy:vision_accuracy_tenant_isolation",
        "missing_with_check:public.vision_accuracy:vision_accuracy_tenant_isolation",
        "security_definer_view:public.vehicle_overview",
        "tenant_column_nullable:public.photo_metadata:tenant_id",
        "tenant_fk_missing:public.vehicle_events:tenant_id",
        "function_search_path_mutable:public.tenant_of:tenant_of(v uuid)",
    } <= new
    assert d.resolved_findings == ()
    # nothing else: tables that were not touched do not appear
    assert {c.qualified for c in d.changes} == {
        "public.vision_metrics",
        "public.vision_accuracy",
        "public.vehicle_overview",
        "public.photo_metadata",
        "public.vehicle_events",
        "public.tenant_of(v uuid)",
        "public.tenants",
    }

    text = render(d, "text")
    assert "table public.vision_metrics\n  ~ rls_enabled: true -> false  [weaker: row level security disabled]" in text
    assert (
        "table public.vehicle_events\n  - constraint vehicle_events_tenant_id_fkey: FOREIGN KEY (tenant_id) "
        "REFERENCES public.tenants(id)  [weaker: foreign key that ties the table to its tenant dropped]"
    ) in text
    assert "view public.vehicle_overview\n  ~ security_invoker: true -> false  [weaker:" in text
    assert "  + grant SELECT to anon  [weaker: SELECT granted to anon]" in text
    assert text.rstrip().splitlines()[-1] == (
        f"5 tables, 1 view, 1 function changed: 2 additions, 1 removal, 5 changes; 8 changes weaken isolation; "
        f"{len(d.new_findings)} new findings, 0 resolved"
    )


@pytest.mark.security
def test_neutral_changes_are_reported_and_not_flagged(pair):
    a, b = pair
    run_sql(a, FUNCTIONS)
    run_sql(b, FUNCTIONS + NEUTRAL)
    d = diff_of(a, b)
    col = one(d, name="vehicles", item_type="column", item="color")
    assert col.change == "added" and (col.after.type, col.after.not_null) == ("text", True) and not col.weaker
    idx = one(d, name="garages", item_type="index", item="garages_tenant_id_idx")
    assert idx.change == "removed" and not idx.weaker
    fn = one(d, object_type="function", name="touch")
    assert attrs(fn) == {"config": (('search_path=""',), ("search_path=pg_catalog",))} and not fn.weaker
    rev = one(d, name="garages", item_type="grant", item="anon")
    assert rev.change == "removed" and rev.before == ("DELETE",) and not rev.weaker
    assert d.weaker_changes == [] and len(d.changes) == 4
    # the dropped index leaves garages' foreign key unindexed: a new info finding, which does not fail
    assert [f.cache_key for f in d.new_findings] == ["unindexed_foreign_key:public.garages:garages_tenant_id_fkey"]
    assert not d.weakens_isolation
    text = render(d, "text")
    assert "table public.vehicles\n  + column color: text, not null, default 'red'::text\n" in text
    assert "[weaker" not in text
    assert 'function public.touch()\n  ~ config: [search_path=""] -> [search_path=pg_catalog]' in text


@pytest.mark.security
def test_execute_granted_on_a_definer_function_that_reads_every_tenant_weakens(pair):
    """A SECURITY DEFINER function over every tenant's vehicles, callable by nobody in A; B grants it to the
    app role: the executors change, and the new security_definer_reads_other_tenants finding marks it weaker.
    A snapshot file without executors (an older dbguard) compares as unchanged."""
    a, b = pair
    fn = """
    create function public.all_vehicles() returns setof public.vehicles language sql stable security definer
      set search_path = '' as $$ select * from public.vehicles $$;
    revoke execute on function public.all_vehicles() from public;
    """
    run_sql(a, fn)
    run_sql(b, fn + "grant execute on function public.all_vehicles() to authenticated;")
    d = diff_of(a, b)
    c = one(d, object_type="function", name="all_vehicles")
    before, after = attrs(c)["executors"]
    assert set(after) - set(before) == {"authenticated"} and set(attrs(c)) == {"executors"}
    assert c.weaker and c.reasons == ("now flagged security_definer_reads_other_tenants",)
    key = "security_definer_reads_other_tenants:public.all_vehicles:all_vehicles()"
    assert [f.cache_key for f in d.new_findings] == [key] and d.weakens_isolation
    old = introspect(a)
    unknown = replace(old, functions=tuple(replace(f, executors=()) for f in old.functions))
    assert diff_snapshots(unknown, old, Config()).identical


@pytest.mark.security
def test_policy_removals_and_role_changes(pair):
    """Removing a RESTRICTIVE policy weakens isolation; removing a PERMISSIVE one narrows access (not weaker);
    a permissive policy widened to anon and a restrictive one narrowed to fewer roles are weaker."""
    a, b = pair
    both = f"""
    create policy tenant_guard on public.vehicles as restrictive for all using (tenant_id = {TENANT});
    create policy guard_all on public.vehicle_images as restrictive for all using (tenant_id = {TENANT});
    """
    run_sql(a, both)
    run_sql(
        b,
        both
        + """
    drop policy tenant_guard on public.vehicles;
    drop policy "Enable read access for all users" on public.profiles;
    alter policy guard_all on public.vehicle_images to authenticated;
    alter policy vision_metrics_tenant_isolation on public.vision_metrics to authenticated, anon;
    """,
    )
    d = diff_of(a, b)
    guard = one(d, name="vehicles", item_type="policy", item="tenant_guard")
    assert guard.change == "removed" and guard.reasons == ("RESTRICTIVE policy removed",)
    open_ = one(d, name="profiles", item_type="policy", item="Enable read access for all users")
    assert open_.change == "removed" and not open_.weaker and "access narrows" in open_.note
    narrowed = one(d, name="vehicle_images", item_type="policy", item="guard_all")
    assert attrs(narrowed) == {"roles": (("public",), ("authenticated",))}
    assert narrowed.reasons == ("RESTRICTIVE policy no longer applies to PUBLIC",)
    widened = one(d, name="vision_metrics", item_type="policy", item="vision_metrics_tenant_isolation")
    assert attrs(widened) == {"roles": (("authenticated",), ("anon", "authenticated"))}
    assert widened.reasons == ("now applies to anon",)
    # without the restrictive guards (removed, or narrowed to authenticated), the open SELECT policies to PUBLIC
    # on vehicles and vehicle_images are no longer covered
    new = {f.cache_key for f in d.new_findings}
    assert {
        "weak_rls_policy:public.vehicles:Enable read access for all users",
        "weak_rls_policy:public.vehicle_images:Enable read access for all users",
    } <= new
    assert "weak_rls_policy:public.profiles:Enable read access for all users" in {
        f.cache_key for f in d.resolved_findings
    }
    text = render(d, "text")
    assert (
        '  - policy "Enable read access for all users": PERMISSIVE SELECT TO PUBLIC USING (true)  '
        "(permissive policy removed: access narrows)" in text
    )


@pytest.mark.security
def test_roles_gaining_bypassrls_are_weaker(demo_dsn):
    a = introspect(demo_dsn)
    roles = tuple(replace(r, bypassrls=True) if r.name == "authenticated" else r for r in a.roles)
    b = replace(a, roles=roles + (Role("etl", superuser=True, bypassrls=False, can_login=True),))
    d = diff_snapshots(a, b, Config())
    auth = one(d, object_type="role", name="authenticated")
    assert attrs(auth) == {"bypassrls": (False, True)} and auth.weaker
    etl = one(d, object_type="role", name="etl")
    assert etl.change == "added" and etl.reasons == ("new role with SUPERUSER: it bypasses row level security",)
    assert "role authenticated\n  ~ bypassrls: false -> true  [weaker:" in render(d, "text")


def test_fixes_resolve_findings_without_weakening(pair):
    a, b = pair
    run_sql(b, FIX_GARAGES)
    d = diff_of(a, b)
    assert attrs(one(d, name="garages", item_type="rls")) == {"rls_enabled": (False, True)}
    assert one(d, name="garages", item_type="policy", item="garages_tenant_isolation").change == "added"
    assert d.weaker_changes == [] and d.new_findings == () and not d.weakens_isolation
    assert [f.cache_key for f in d.resolved_findings] == ["rls_disabled_with_tenant_column:public.garages"]
    assert (
        render(d, "text")
        .rstrip()
        .endswith(
            "1 table changed: 1 addition, 0 removals, 1 change; 0 changes weaken isolation; 0 new findings, 1 resolved"
        )
    )


def test_config_scope_and_ignores_apply(pair, tmp_path):
    a, b = pair
    run_sql(
        b,
        "alter table public.vision_metrics disable row level security; "
        "create schema extra; create table extra.t (id int primary key);",
    )
    cfg = Config(
        schemas=("public",),
        ignore=("rls_disabled_with_tenant_column:public.vision_metrics", "policy_exists_rls_disabled:*"),
    )
    d = diff_of(a, b, cfg)
    assert {c.qualified for c in d.changes} == {"public.vision_metrics"}  # schema extra is out of scope
    assert d.new_findings == () and len(d.weaker_changes) == 1
    everything = diff_of(a, b)
    assert one(everything, object_type="schema", name="extra").change == "added"
    extra = one(everything, object_type="table", schema="extra", name="t")
    assert extra.change == "added" and not extra.weaker  # no tenant column: not tenant data


@pytest.mark.security
def test_hostile_identifiers(databases):
    schema, table = "My Schema", 'a"b; drop table x'
    uni, long_ = "Ünïcødé col", "c" * 63
    newline = "line\nbreak"
    base = sql.SQL("""
        create table public.tenants (id uuid primary key);
        create schema {s};
        create table {s}.{t} (id int primary key, tenant_id uuid not null references public.tenants(id), {u} text);
        alter table {s}.{t} enable row level security;
        create policy {p} on {s}.{t} for all to public using (tenant_id = {ctx}) with check (tenant_id = {ctx});
    """).format(
        s=sql.Identifier(schema),
        t=sql.Identifier(table),
        u=sql.Identifier(uni),
        p=sql.Identifier(newline),
        ctx=sql.SQL(TENANT),
    )
    change = sql.SQL("""
        alter table {s}.{t} add column {l} integer;
        alter table {s}.{t} drop column {u};
        alter policy {p} on {s}.{t} using (true);
        create table {s}.{n} (id int primary key, tenant_id uuid not null references public.tenants(id));
    """).format(
        s=sql.Identifier(schema),
        t=sql.Identifier(table),
        u=sql.Identifier(uni),
        l=sql.Identifier(long_),
        p=sql.Identifier(newline),
        n=sql.Identifier("Neue Tabelle ✓"),
    )
    a, b = databases.create(), databases.create()
    for dsn, stmts in ((a, [base]), (b, [base, change])):
        with connect(dsn, autocommit=True) as conn:
            for s in stmts:
                conn.execute(s)
    d = diff_of(a, b)
    assert one(d, schema=schema, name=table, item_type="column", item=long_).change == "added"
    assert one(d, schema=schema, name=table, item_type="column", item=uni).change == "removed"
    pol = one(d, schema=schema, name=table, item_type="policy", item=newline)
    assert attrs(pol)["using"][1] == "true" and pol.weaker
    assert f"weak_rls_policy:{schema}.{table}:{newline}" in {f.cache_key for f in d.new_findings}
    added = one(d, schema=schema, name="Neue Tabelle ✓", item_type="table")
    assert added.change == "added" and added.reasons == ("now flagged rls_disabled_with_tenant_column",)
    text = render(d, "text")
    assert 'table "My Schema"."a""b; drop table x"\n' in text
    assert f"  + column {long_}: integer, nullable" in text
    assert '  - column "Ünïcødé col": text, nullable' in text
    assert '  ~ policy "line\\x0abreak": using: ' in text  # the newline shown escaped, not breaking the line
    assert not any(line.startswith("break") for line in text.splitlines())
    data = json.loads(render(d, "json"))
    assert {c["item"] for c in data["changes"]} == {long_, uni, newline, None}
    assert {(c["schema"], c["name"]) for c in data["changes"]} == {(schema, table), (schema, "Neue Tabelle ✓")}
    assert '+ table "My Schema"."Neue Tabelle ✓": 2 columns, row level security disabled' in text


# --------------------------------------------------------------------------- the command
@pytest.mark.integration
def test_snapshot_file_against_database_and_back(pair, tmp_path):
    a, b = pair
    snap = tmp_path / "before.json"
    assert dbguard("introspect", "--dsn", a, "--out", str(snap)).returncode == 0
    run_sql(
        b,
        "alter table public.vehicles add column color text; "
        "alter table public.vision_metrics disable row level security;",
    )
    out = tmp_path / "diff.json"
    proc = dbguard("diff", str(snap), b, "--format", "json", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr.startswith(f"wrote {out}: 2 tables changed: 1 addition")
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["source"] == {
        "label": str(snap),
        "kind": "snapshot",
        "database": parse_dsn(a)["dbname"],
        "server_version": data["source"]["server_version"],
        "taken_at": data["source"]["taken_at"],
    }
    assert data["target"]["kind"] == "database" and data["target"]["label"] == describe_dsn(b)
    assert data["summary"]["additions"] == 1 and data["summary"]["changes"] == 1 and data["summary"]["weaker"] == 1
    by_item = {(c["name"], c["item_type"]): c for c in data["changes"]}
    assert by_item[("vehicles", "column")]["after"]["type"] == "text"
    assert by_item[("vision_metrics", "rls")]["weaker"] is True
    assert by_item[("vision_metrics", "rls")]["attributes"] == [
        {"attribute": "rls_enabled", "before": True, "after": False}
    ]
    assert "rls_disabled_with_tenant_column:public.vision_metrics" in [f["cache_key"] for f in data["new_findings"]]

    # the other way round: database -> snapshot; the added column is now removed, RLS comes back on
    back = dbguard("diff", b, str(snap))
    assert back.returncode == 0, back.stderr
    assert "table public.vehicles\n  - column color: text, nullable" in back.stdout
    assert "  ~ rls_enabled: false -> true\n" in back.stdout
    assert back.stdout.rstrip().endswith(
        "2 tables changed: 0 additions, 1 removal, 1 change; 0 changes weaken isolation; 0 new findings, 2 resolved"
    )
    # two snapshot files: same bytes every time (CI diffs)
    snap_b = tmp_path / "after.json"
    snap_b.write_text(dump_snapshot(introspect(b)), encoding="utf-8")
    first = dbguard("diff", str(snap), str(snap_b), "--format", "json")
    assert first.stdout == dbguard("diff", str(snap), str(snap_b), "--format", "json").stdout
    assert json.loads(first.stdout)["changes"] == data["changes"]


@pytest.mark.integration
@pytest.mark.security
def test_fail_on_weaker_exit_codes(pair, tmp_path):
    a, b = pair
    before = tmp_path / "before.json"
    before.write_text(dump_snapshot(introspect(a)), encoding="utf-8")
    # identical: "no differences", exit 0 even with --fail-on-weaker
    same = dbguard("diff", str(before), b, "--fail-on-weaker")
    assert same.returncode == 0 and same.stdout.rstrip().endswith("no differences"), same.stderr
    # a migration that fixes things: resolved findings, nothing weaker -> 0
    run_sql(b, FIX_GARAGES)
    fixed = dbguard("diff", str(before), b, "--fail-on-weaker")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    # a weakening one: 0 without the flag, 1 with it
    run_sql(b, "grant select on public.vehicle_overview to anon;")
    assert dbguard("diff", str(before), b).returncode == 0
    weaker = dbguard("diff", str(before), b, "--fail-on-weaker")
    assert weaker.returncode == 1 and "[weaker: SELECT granted to anon]" in weaker.stdout


@pytest.mark.security
def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(
        '{"database": "x", "server_version": "16", "server_version_num": 160000, "current_user": "u", '
        '"taken_at": "t", "schemas": ["public"]}',
        encoding="utf-8",
    )
    cases = {
        "missing.json": "source snapshot file not found: ",
        "bad.json": "is not valid JSON: Expecting",
        "object.json": "is not a dbguard snapshot: database is missing",
        "report.json": "is not a dbguard snapshot: it is a dbguard validate report",
        "typed.json": "is not a dbguard snapshot: tables[0].name should be a string",
        "notes.txt": "is not a snapshot: expected a JSON object",
        "nonsense": "nonsense: no such snapshot file, and not a database URL",
        "dir": "is a directory",
    }
    (tmp_path / "bad.json").write_text('{"database": ', encoding="utf-8")
    (tmp_path / "object.json").write_text('{"a": 1}', encoding="utf-8")
    (tmp_path / "report.json").write_text('{"summary": {}, "findings": []}', encoding="utf-8")
    snap = json.loads(good.read_text())
    snap["tables"] = [{"schema": "public", "name": 5}]
    (tmp_path / "typed.json").write_text(json.dumps(snap), encoding="utf-8")
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "dir").mkdir()
    for name, needle in cases.items():
        capsys.readouterr()
        rc = main(["diff", str(tmp_path / name) if name != "nonsense" else name, str(good)])
        out, err = capsys.readouterr()
        assert rc == 2, (name, out, err)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("dbguard diff: error: "), (name, err)
        assert out == ""
    # the target side is named too, and a good snapshot against itself is fine
    assert main(["diff", str(good), str(tmp_path / "missing.json")]) == 2
    assert "target snapshot file not found" in capsys.readouterr().err
    assert main(["diff", str(good), str(good)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("no differences")
    # an unreachable database, as a real process: one line, no traceback, no password
    proc = dbguard("diff", str(good), f"postgresql://app:{SECRET}@127.0.0.1:1/prod", timeout=60)
    assert_one_line_error(proc, "target: cannot connect to app@127.0.0.1:1/prod")
    assert_one_line_error(dbguard("diff", str(good)), "the following arguments are required: TARGET")
    # a URL that happens to end in .json is a URL, not a file name to echo
    proc = dbguard("diff", f"postgresql://app:{SECRET}@127.0.0.1:1/prod?application_name=x.json", str(good))
    assert_one_line_error(proc, "source: cannot connect to app@127.0.0.1:1/prod")
    assert main(["diff", str(good), str(good), "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.security
@pytest.mark.integration
def test_no_password_in_any_output(server_dsn, password_role, pair, tmp_path):  # noqa: F811
    a, b = pair
    run_sql(b, "grant select on public.vehicle_overview to anon;")
    dsn_a = _as_user(server_dsn, password_role, SECRET, parse_dsn(a)["dbname"])
    dsn_b = _as_user(server_dsn, password_role, SECRET, parse_dsn(b)["dbname"])
    out = tmp_path / "d.json"
    for fmt in ("text", "json"):
        proc = dbguard("diff", dsn_a, dsn_b, "--format", fmt, "--fail-on-weaker")
        assert proc.returncode == 1, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr and f"{password_role}@" in proc.stdout
    proc = dbguard("diff", dsn_a, dsn_b, "--format", "json", "--out", str(out))
    assert proc.returncode == 0 and SECRET not in proc.stderr + out.read_text(encoding="utf-8")
    wrong = dbguard("diff", dsn_a, _as_user(server_dsn, password_role, SECRET + "x", parse_dsn(b)["dbname"]))
    assert_one_line_error(wrong, "target: cannot connect", "wrong user name or password")


def test_diff_does_not_import_dagster_pandas_or_great_expectations(tmp_path):
    snap = tmp_path / "s.json"
    snap.write_text(
        '{"database": "x", "server_version": "16", "server_version_num": 160000, "current_user": "u", '
        '"taken_at": "t", "schemas": ["public"], "tables": []}',
        encoding="utf-8",
    )
    code = (
        "import json, sys\nfrom dbguard_pipeline.cli import main\n"
        f"rc = main(['diff', {str(snap)!r}, {str(snap)!r}, '--out', {str(tmp_path / 'd.txt')!r}])\n"
        "print(json.dumps([rc, sorted(m for m in ('dagster', 'pandas', 'great_expectations') if m in sys.modules)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, []]


@pytest.mark.integration
@pytest.mark.security
def test_ci_diff_around_a_fix_migration_and_its_rollback(demo_dsn, tmp_path):
    """CI: snapshot before and after `dbguard migrate`. dbguard's own fix rewrites the open permissive policy
    in place to pin the tenant: nothing weaker, findings resolved. Its rollback reopens the table: weaker."""
    from dbguard_pipeline.fixes.ledger import Runner

    from .migrations_helpers import plan, write

    migrations = tmp_path / "migrations"
    before, after, rolled = tmp_path / "before.json", tmp_path / "after.json", tmp_path / "rolled_back.json"
    assert dbguard("introspect", "--dsn", demo_dsn, "--out", str(before)).returncode == 0
    name = write(plan(demo_dsn, "fix-rls-policy", "profiles"), migrations)
    runner = Runner(demo_dsn, migrations)
    assert [r.name for r in runner.up()] == [name]
    after.write_text(dump_snapshot(introspect(demo_dsn)), encoding="utf-8")

    proc = dbguard("diff", str(before), str(after), "--fail-on-weaker", "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    # the weak SELECT policy is rewritten in place (same name and command, issue #11): one policy changed
    assert ("profiles", "policy", "changed") in {(c["name"], c["item_type"], c["change"]) for c in data["changes"]}
    assert data["summary"]["weaker"] == 0 and data["new_findings"] == []
    assert "weak_rls_policy:public.profiles:Enable read access for all users" in [
        f["cache_key"] for f in data["resolved_findings"]
    ]
    assert {c["schema"] for c in data["changes"]} == {"public"}  # the runner's ledger schema is not reported

    runner.rollback(name)
    rolled.write_text(dump_snapshot(introspect(demo_dsn)), encoding="utf-8")
    assert dbguard("diff", str(before), str(rolled)).stdout.rstrip().endswith("no differences")
    back = dbguard("diff", str(after), str(rolled), "--fail-on-weaker")
    assert back.returncode == 1
    assert "now flagged weak_rls_policy" in back.stdout and "1 change weakens isolation" in back.stdout
