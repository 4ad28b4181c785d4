"""Families of the fix-loop reproductions (issue #11): the initplan rewrite on every spelling, per-command
replacement on any mix of commands, the idiom of sibling tables, refusing to guess, and what happens to a fix
that fails its round trip (rejected/, the others written, verdicts in the headers)."""

from __future__ import annotations

import pglast
import psycopg
import pytest

from dbguard_pipeline import services
from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.actions.idiom import wrap_calls
from dbguard_pipeline.policy.analyzer import per_row_calls

from .conftest import run_sql
from .test_fix_loop import BREWERY, FARMS, assert_never_worse, policies, repro_file, run_loop

WRAPS = [
    (
        "(farm_id IN ( SELECT fh.farm_id FROM farm_hands fh WHERE (fh.user_id = auth.uid())))",
        "(farm_id IN ( SELECT fh.farm_id FROM farm_hands fh WHERE (fh.user_id = (select auth.uid()))))",
    ),
    (
        "(tenant_id = (current_setting('app.t'::text, true))::uuid)",
        "(tenant_id = ((select current_setting('app.t'::text, true)))::uuid)",
    ),
    (
        "(org = ((auth.jwt() -> 'app_metadata'::text) ->> 'org'::text))",
        "(org = (((select auth.jwt()) -> 'app_metadata'::text) ->> 'org'::text))",
    ),
    (
        "(owner = auth.uid()) OR (auth.role() = 'service_role'::text)",
        "(owner = (select auth.uid())) OR ((select auth.role()) = 'service_role'::text)",
    ),
    (
        "(label = 'auth.uid() (x'::text) AND (u = auth.uid())",
        "(label = 'auth.uid() (x'::text) AND (u = (select auth.uid()))",
    ),
    ("(u = ( SELECT auth.uid() AS uid))", "(u = ( SELECT auth.uid() AS uid))"),  # already once per query
    ("public.works_on(farm_id)", "public.works_on(farm_id)"),  # nothing to wrap
]


@pytest.mark.parametrize("before,after", WRAPS)
def test_wrap_calls_changes_nothing_but_the_per_row_calls(before, after):
    got = wrap_calls(before)
    assert got == after
    assert per_row_calls(got) == []
    pglast.parse_sql(f"select {got}")


PER_COMMAND = """
create table public.mash_logs (id bigint generated always as identity primary key,
  tenant_id uuid not null references public.tenants (id), note text not null);
create index on public.mash_logs (tenant_id);
alter table public.mash_logs enable row level security;
create policy mash_read on public.mash_logs for select to brew_app using (true);
create policy mash_add on public.mash_logs for insert to brew_app
  with check (tenant_id = (select nullif(current_setting('brew.tenant', true), '')::uuid));
create policy mash_edit on public.mash_logs for update to brew_app
  using (tenant_id = (select nullif(current_setting('brew.tenant', true), '')::uuid))
  with check (tenant_id is not null);
create policy mash_drop on public.mash_logs for delete to brew_app using (tenant_id is not null);
insert into public.mash_logs (tenant_id, note) select id, 'ok' from public.tenants;
grant select, insert, update, delete on public.mash_logs to brew_app;
"""


@pytest.mark.integration
def test_each_weak_per_command_policy_is_rewritten_for_its_own_command(databases, tmp_path):
    loop = run_loop(databases, tmp_path, "brewery", None, BREWERY, extra_sql=PER_COMMAND)
    assert_never_worse(loop)
    got = policies(loop.dsn, "public.mash_logs")
    assert {k: v[0] for k, v in got.items()} == {
        "mash_read": "SELECT",
        "mash_add": "INSERT",
        "mash_edit": "UPDATE",
        "mash_drop": "DELETE",
    }
    for name in ("mash_read", "mash_drop"):
        assert "current_setting('brew.tenant'" in got[name][1]


SIBLING_SUBQUERY = """
create table public.orchard_rows (id bigint generated always as identity primary key,
  farm_id uuid not null references public.farms (id), trees int not null);
create index on public.orchard_rows (farm_id);
grant select, insert, update, delete on public.orchard_rows to authenticated;
insert into public.orchard_rows (farm_id, trees) select id, 12 from public.farms;
"""


@pytest.mark.integration
def test_a_table_without_rls_gets_the_membership_subquery_its_siblings_use(databases, tmp_path):
    dsn = databases.create()
    run_sql(dsn, repro_file("farms", "common").read_text())
    run_sql(dsn, repro_file("farms", "f1_initplan_rewrite").read_text())
    run_sql(dsn, SIBLING_SUBQUERY)
    out = tmp_path / "m"
    fixes = services.generate_fixes(dsn, FARMS, out_dir=str(out), round_trip="yes", timestamp="20260101000000")
    assert fixes.rejected == []
    services.migrator(dsn, out).up()
    ((_name, (cmd, using, check)),) = policies(dsn, "public.orchard_rows").items()
    assert cmd == "ALL" and "farm_hands fh" in using and "( SELECT auth.uid() AS uid)" in using and using == check
    with psycopg.connect(dsn) as conn, conn.transaction(force_rollback=True):  # the app sends only sub
        conn.execute("""select set_config('request.jwt.claims', '{"sub": "f1000000-0000-4000-8000-000000000001"}',
                     true)""")
        conn.execute("set local role authenticated")
        seen = {r[0] for r in conn.execute("select farm_id::text from public.orchard_rows")}
    assert seen == {"f0000000-0000-4000-8000-00000000000a"}


@pytest.mark.integration
def test_no_idiom_and_no_configured_context_is_refused_with_one_line(databases):
    dsn = databases.create()
    run_sql(
        dsn,
        """
        do $$ begin if not exists (select 1 from pg_roles where rolname = 'authenticated') then
          create role authenticated nologin; end if; end $$;
        create table public.tenants (id uuid primary key);
        create table public.notes (id bigint primary key, tenant_id uuid not null references public.tenants (id));
        create index on public.notes (tenant_id);
        grant select on public.notes to authenticated;""",
    )
    fixes = services.plan_fixes(dsn, Config())
    assert fixes.migrations == []
    line = next(s for s in fixes.skipped if s.startswith("fix-rls-policy public.notes"))
    assert "cannot tell how the application sends its tenant" in line and "\n" not in line
    with pytest.raises(DbguardError, match="cannot tell how the application sends its tenant"):
        services.plan_fixes(dsn, Config(), action="fix-rls-policy", table="public.notes")


@pytest.mark.integration
def test_a_fix_that_fails_its_round_trip_goes_to_rejected_and_the_others_are_written(databases, tmp_path):
    dsn = databases.create()
    run_sql(dsn, repro_file("brewery", "common").read_text())
    run_sql(dsn, repro_file("brewery", "r2_widen").read_text())
    out = tmp_path / "m"
    fixes = services.plan_fixes(dsn, BREWERY, out_dir=str(out), timestamp="20260101000000")
    hop = next(m for m in fixes.migrations if m.qualified == "public.hop_lots")
    # what the generator wrote before issue #11: the weak SELECT policy replaced by FOR ALL (widens the table)
    hop.forward = [
        type(b)(
            tuple(s.replace("AS PERMISSIVE FOR SELECT", "AS PERMISSIVE FOR ALL") for s in b.statements),
            b.transactional,
            b.comment,
            b.untimed,
        )
        for b in hop.forward
    ]
    services.render_fixes(fixes)
    services.lint_fixes(fixes)
    services.round_trip_fixes(dsn, BREWERY, fixes, "yes")
    services.write_fixes(fixes)
    assert [m.qualified for m in fixes.rejected] == ["public.hop_lots"]
    assert "own access: FAIL: widened insert, update, delete" in (hop.rejected or "")
    rejected = (out / "rejected" / hop.file_names("20260101000000")[0]).read_text()
    assert "-- REJECTED (do not apply): own access: FAIL: widened" in rejected
    written = sorted(p.name for p in out.glob("*.sql"))
    assert written == ["20260101000000_fix_rls_policy_kegs.sql", "20260101000000_fix_rls_policy_kegs_rollback.sql"]
    header = (out / written[0]).read_text()
    assert "--   audit: ok: no finding that was not there before" in header
    assert "--   probe: ok: leaks " in header and "--   own access: ok: own rows and commands as before" in header
    # the runner never reads rejected/: migrate up applies kegs only
    applied = services.migrator(dsn, out).up()
    assert len(applied) == 1


@pytest.mark.integration
def test_generate_all_exits_non_zero_when_a_fix_is_rejected_and_prints_the_verdicts(databases, tmp_path, capsys):
    from dbguard_pipeline.cli import main

    dsn = databases.create()
    run_sql(dsn, repro_file("brewery", "common").read_text())
    run_sql(dsn, repro_file("brewery", "r2_widen").read_text())
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text("tenant:\n  context: guc\n  guc: brew.tenant\n  app_role: brew_app\n")
    rc = main(["generate-migration", "--all", "--dsn", dsn, "--config", str(cfg), "--out-dir", str(tmp_path / "m")])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("own access: ok: own rows and commands as before") == 2
    assert "probe: ok: leaks 2 -> 0, none new" in out


@pytest.mark.integration
def test_a_single_rejected_fix_is_an_error_not_nothing_to_fix(databases, tmp_path, capsys, monkeypatch):
    """The only migration fails its round trip: exit non-zero with the reason (it once said "nothing to fix")."""
    from dbguard_pipeline.cli import main
    from dbguard_pipeline.fixes import sandbox

    def failing(dsn, migrations, config, method="auto", judge=True):
        for m in migrations:
            m.rejected = "probe: FAIL: new leaks (simulated)"
        return sandbox.SandboxResult("template", [])

    monkeypatch.setattr(sandbox, "round_trip", failing)
    dsn = databases.create()
    run_sql(dsn, repro_file("brewery", "common").read_text())
    run_sql(dsn, repro_file("brewery", "r2_widen").read_text())
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text("tenant:\n  context: guc\n  guc: brew.tenant\n  app_role: brew_app\n")
    out_dir = tmp_path / "m"
    rc = main(
        [
            "generate-migration",
            "fix-rls-policy",
            "public.hop_lots",
            "--dsn",
            dsn,
            "--config",
            str(cfg),
            "--out-dir",
            str(out_dir),
        ]
    )
    captured = capsys.readouterr()
    assert rc != 0 and "nothing to fix" not in captured.out
    assert "probe: FAIL: new leaks (simulated)" in captured.err
    assert len(list((out_dir / "rejected").glob("*.sql"))) == 2 and not list(out_dir.glob("*.sql"))
