"""Schemas written the way other teams write them (repros/explore/): a basejump-style starter kit, hostile
identifiers everywhere, app-owned tables partitioned by month. Each runs as a user would (init, validate,
test-isolation, generate-migration --all, migrate up, validate, test-isolation) and every answer is judged
against the truth: what the application role sees and may do with each tenant's context."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dbguard_pipeline import services
from dbguard_pipeline.config import Config, load_config
from dbguard_pipeline.fixes.actions.idiom import find_idiom
from dbguard_pipeline.report.grouped import render_isolation
from dbguard_pipeline.report.render import render
from dbguard_pipeline.text import role_list

from .conftest import run_sql
from .isolation_helpers import supabase_shim

pytestmark = pytest.mark.security

HERE = Path(__file__).resolve().parent / "repros" / "explore"
ROOT = Path(__file__).resolve().parent.parent

TEAM_A, TEAM_B = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
OWNER_A, MEMBER_A, OWNER_B = (
    "00000000-0000-0000-0000-0000000000a1",
    "00000000-0000-0000-0000-0000000000a2",
    "00000000-0000-0000-0000-0000000000b1",
)
HOSTILE_SCHEMA, HOSTILE_ROLE = 'a"b; drop table x', 'App "User"; x'


def load(databases, name: str, shim: bool = False) -> tuple[str, Config]:
    dsn = databases.create()
    if shim:
        run_sql(dsn, supabase_shim())
    run_sql(dsn, (HERE / f"{name}.sql").read_text(encoding="utf-8"))
    return dsn, load_config(HERE / f"{name}.yaml")


def as_app(dsn: str, role: str, settings: dict[str, str], query: sql.Composable | str, params: Any = None):
    """Rows of ``query`` run as ``role`` with ``settings`` (transaction-local), rolled back; or the error."""
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        for k, v in settings.items():
            conn.execute("select set_config(%s, %s, true)", (k, v))
        try:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else cur.rowcount
        except psycopg.errors.InsufficientPrivilege as exc:
            return exc
        finally:
            conn.rollback()


def jwt(user: str) -> dict[str, str]:
    return {"request.jwt.claims": json.dumps({"sub": user, "role": "authenticated"})}


def fix_loop(dsn: str, config: Config, out: Path) -> services.GeneratedFixes:
    result = services.generate_fixes(dsn, config, out_dir=str(out), round_trip="yes", timestamp="20260101000000")
    assert result.rejected == []
    services.migrator(dsn, out).up()
    return result


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "dbguard_pipeline.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


# --------------------------------------------------------------------------- basejump: members keep access
def test_basejump_fix_uses_the_read_idiom_so_members_keep_their_rows(databases, tmp_path):
    dsn, config = load(databases, "basejump", shim=True)
    files = "select account_id::text, path from public.project_files order by path"
    # the truth before: RLS forgotten on project_files, every signed-in user sees both accounts' files
    assert len(as_app(dsn, "authenticated", jwt(MEMBER_A), files)) == 2
    before = services.audit(dsn, config)
    assert {f.cache_key for f in before.findings if f.rule == "rls_disabled_with_tenant_column"} == {
        "rls_disabled_with_tenant_column:public.project_files"
    }
    report = services.probe(dsn, config)
    assert {r.qualified for r in report.leaks} == {"public.project_files"}

    fix_loop(dsn, config, tmp_path / "m")
    with psycopg.connect(dsn) as conn:
        (using,) = conn.execute(
            "select qual from pg_policies where schemaname = 'public' and tablename = 'project_files'"
        ).fetchone()
    assert "owner" not in using  # never the owner-only write check of a sibling
    # the truth after: the member and the owner of team A see team A's file, B's owner sees B's; nobody both
    assert as_app(dsn, "authenticated", jwt(MEMBER_A), files) == [(TEAM_A, "/a")]
    assert as_app(dsn, "authenticated", jwt(OWNER_A), files) == [(TEAM_A, "/a")]
    assert as_app(dsn, "authenticated", jwt(OWNER_B), files) == [(TEAM_B, "/b")]
    insert = "insert into public.project_files (account_id, project_id, path) values (%s, %s, '/x')"
    project_a = "00000000-0000-0000-0000-000000000a01"
    assert as_app(dsn, "authenticated", jwt(MEMBER_A), insert, (TEAM_A, project_a)) == 1
    assert isinstance(as_app(dsn, "authenticated", jwt(OWNER_B), insert, (TEAM_A, project_a)), Exception)
    after = services.audit(dsn, config)
    assert not [f for f in after.findings if f.rule == "rls_disabled_with_tenant_column" and f.schema == "public"]
    assert services.probe(dsn, config).leaks == []


def test_the_idiom_prefers_read_policies_over_narrower_write_checks(databases):
    """The family: whatever the counts, a table's own or its siblings' SELECT/ALL predicate comes before an
    owner-only INSERT/UPDATE/DELETE check (three sibling tables write with the owner check, one reads)."""
    dsn, config = load(databases, "basejump", shim=True)
    run_sql(
        dsn,
        """
        create table public.labels (id int primary key, account_id uuid not null references basejump.accounts (id));
        alter table public.labels enable row level security;
        create policy "owners write labels" on public.labels for update to authenticated
            using (basejump.has_role_on_account(account_id, 'owner'));
        create policy "owners delete labels" on public.labels for delete to authenticated
            using (basejump.has_role_on_account(account_id, 'owner'));
        create policy "members read labels" on public.labels for select to authenticated
            using (basejump.has_role_on_account(account_id));
        """,
    )
    snap = services.introspect(dsn, config, config.schemas)
    labels = snap.table("public.labels")
    own = find_idiom(snap, config, labels, "account_id")
    assert own is not None and own[0] == "basejump.has_role_on_account(account_id)"
    files = snap.table("public.project_files")
    sibling = find_idiom(snap, config, files, "account_id")
    assert sibling is not None and "owner" not in sibling[0]


# --------------------------------------------------------------------------- hostile identifiers
def test_hostile_names_are_quoted_in_every_answer_and_the_fix_holds(databases, tmp_path):
    dsn, config = load(databases, "hostile")
    assert config.tenant.app_role == HOSTILE_ROLE and config.tenant.tenants_schema == HOSTILE_SCHEMA
    shown = '"a""b; drop table x"."Order Lines"'
    report = services.probe(dsn, config)
    assert {r.qualified for r in report.leaks} == {f"{HOSTILE_SCHEMA}.Order Lines", f"{HOSTILE_SCHEMA}.User"}
    text = render_isolation(report, verbose=True)
    assert shown in text and f"{HOSTILE_SCHEMA}.Order Lines" not in text
    assert 'as "App ""User""; x" with tenant A' in text
    assert f"as {HOSTILE_ROLE} " not in text
    witness = next(r.detail for r in report.leaks if r.probe == "select_other_tenant")
    assert f"SELECT on {shown} returned 1 row of tenant B" in witness

    proc = cli(
        "generate-migration",
        "--all",
        "--dsn",
        dsn,
        "--config",
        str(HERE / "hostile.yaml"),
        "--out",
        str(tmp_path / "m"),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert 'run fix-rls-policy \'"a""b; drop table x"."Orgs"\' explicitly' in out
    assert 'FOR ALL TO "App ""User""; x" (no policy applies to "App ""User""; x"), "Org Id" = the current' in out
    assert f"on {HOSTILE_SCHEMA}." not in out and f"TO {HOSTILE_ROLE}" not in out
    services.migrator(dsn, tmp_path / "m").up()

    # the truth after: tenant A sees and writes only its own rows
    a = {"app.org": TEAM_A}
    lines = sql.SQL('select "Org Id"::text from {} order by 1').format(sql.Identifier(HOSTILE_SCHEMA, "Order Lines"))
    assert as_app(dsn, HOSTILE_ROLE, a, lines) == [(TEAM_A,)]
    users = sql.Identifier(HOSTILE_SCHEMA, "User")
    add = sql.SQL('insert into {} ("Org Id", "E-mail") values (%s, %s)').format(users)
    assert as_app(dsn, HOSTILE_ROLE, a, add, (TEAM_A, "new@a")) == 1
    assert isinstance(as_app(dsn, HOSTILE_ROLE, a, add, (TEAM_B, "evil@b")), Exception)
    assert services.probe(dsn, config).leaks == []


def test_hostile_names_are_quoted_in_rule_messages(databases):
    dsn, config = load(databases, "hostile")
    result = services.audit(dsn, config)
    messages = {f.rule: f.message for f in result.findings}
    assert messages["auth_rls_initplan"].startswith(
        'policy "read ""own"" org" on "a""b; drop table x"."User" calls current_setting()'
    )
    assert (
        'policy "insert; anything" (INSERT to "App ""User""; x") on "a""b; drop table x"."User"'
        in (messages["missing_with_check"])
    )
    assert 'references "a""b; drop table x"."Orgs"' in messages["unindexed_foreign_key"]
    assert '(constraint "User_Org Id_fkey")' in messages["unindexed_foreign_key"]
    for f in result.findings:
        assert f"{HOSTILE_SCHEMA}." not in f.message.replace(f'"{HOSTILE_SCHEMA.replace(chr(34), 2 * chr(34))}"', "")
        assert f.cache_key.startswith(f"{f.rule}:{HOSTILE_SCHEMA}.")  # keys stay raw
    text = render(result, "text", color=False, verbose=True)
    assert f" {HOSTILE_SCHEMA}." not in text and f"'{HOSTILE_SCHEMA}." not in text


def test_hostile_names_probe_builds_rows_of_empty_tables(databases):
    """Names are quoted for people only: the probe still finds a hostile parent table by its key when it builds
    test rows for an empty table (every probe runs, none "not probed")."""
    dsn, config = load(databases, "hostile")
    run_sql(
        dsn,
        """
        set search_path = "a""b; drop table x";
        delete from "select"; delete from "Ünïcode tâble";
        -- an empty child of an empty hostile parent: its test row needs a parent row built first
        create table "Line; Items" ("Org Id" uuid not null, "from" int not null, n int,
            foreign key ("Org Id", "from") references "select" ("Org Id", "from"));
        create index on "Line; Items" ("Org Id", "from");
        alter table "Line; Items" enable row level security;
        create policy p on "Line; Items" for all to public
            using ("Org Id" = (select nullif(current_setting('app.org', true), '')::uuid));
        grant select, insert, update, delete on "Line; Items" to public;
        reset search_path;
        """,
    )
    report = services.probe(dsn, config)
    assert report.not_probed == []
    assert {r.qualified for r in report.leaks} == {f"{HOSTILE_SCHEMA}.Order Lines", f"{HOSTILE_SCHEMA}.User"}
    assert f"{HOSTILE_SCHEMA}.Line; Items" in report.tables


def test_init_on_hostile_names_writes_what_loads_and_says_it_quoted(databases, tmp_path):
    dsn, expected = load(databases, "hostile")
    proc = cli("init", "--dsn", dsn, "--out", str(tmp_path / "dbguard.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert (
        'tenant column "Org Id" -> "a""b; drop table x"."Orgs", context guc, app role "App ""User""; x"' in proc.stderr
    )
    got = load_config(tmp_path / "dbguard.yaml").tenant
    for field in ("column", "tenants_table", "tenants_key", "context", "guc", "app_role"):
        assert getattr(got, field) == getattr(expected.tenant, field)


def test_role_list_quotes_role_names_as_postgresql_needs():
    assert role_list([HOSTILE_ROLE, "public", "app_user", "Mixed"]) == '"App ""User""; x", PUBLIC, app_user, "Mixed"'


def test_probe_preflight_advice_quotes_the_role(databases):
    dsn, config = load(databases, "hostile")
    role = 'Bypass "me"'
    quoted_role = sql.Identifier(role).as_string(None)  # "Bypass ""me"""
    run_sql(
        dsn,
        f"do $$ begin if not exists (select 1 from pg_roles where rolname = 'Bypass \"me\"') then "
        f"create role {quoted_role} nologin bypassrls; end if; end $$",
    )
    cfg = config.model_copy(update={"tenant": config.tenant.model_copy(update={"app_role": role})})
    with pytest.raises(Exception) as err:
        services.probe(dsn, cfg)
    assert f"(ALTER ROLE {quoted_role} NOBYPASSRLS)" in str(err.value)


# --------------------------------------------------------------------------- app-owned tables, monthly partitions
def test_init_takes_the_login_role_that_owns_every_tenant_table(databases, tmp_path):
    dsn, _ = load(databases, "app_owned_partitions")
    proc = cli("init", "--dsn", dsn, "--out", str(tmp_path / "dbguard.yaml"))
    assert proc.returncode == 0, proc.stderr
    inferred = load_config(tmp_path / "dbguard.yaml")
    assert inferred.tenant.app_role == "ledger_app"
    # never the deprecated tenant.app_role_owns_tables (every later command would warn about it)
    assert "app_role_owns_tables" not in (tmp_path / "dbguard.yaml").read_text()
    assert "deprecated" not in proc.stderr


def test_app_owned_partitions_loop_and_truth(databases, tmp_path):
    dsn, config = load(databases, "app_owned_partitions")
    a = {"app.org_id": TEAM_A}
    part = "select org_id::text from ledger.entries_2026_01 order by 1"
    assert as_app(dsn, "ledger_app", a, part) == [(TEAM_A,)] * 2 + [(TEAM_B,)] * 2  # the truth: open
    report = services.probe(dsn, config)
    assert {r.qualified for r in report.leaks} == {
        "ledger.accounts",
        "ledger.entries_2026_01",
        "ledger.entries_2026_02",
        "ledger.entries_default",
    }
    fix_loop(dsn, config, tmp_path / "m")
    assert as_app(dsn, "ledger_app", a, part) == [(TEAM_A,)] * 2
    assert as_app(dsn, "ledger_app", a, "select count(*) from ledger.entries") == [(6,)]
    assert as_app(dsn, "ledger_app", a, "select count(*) from ledger.accounts") == [(1,)]
    assert as_app(dsn, "ledger_app", a, "select count(*) from ledger.budgets") == [(1,)]
    assert services.probe(dsn, config).leaks == []


def test_probe_as_a_role_without_privileges_warns_instead_of_passing_silently(databases):
    dsn, config = load(databases, "app_owned_partitions")
    run_sql(
        dsn,
        "do $$ begin if not exists (select 1 from pg_roles where rolname = 'dbguard_explore_nobody') then "
        "create role dbguard_explore_nobody nologin; end if; end $$;",
    )
    cfg = config.model_copy(update={"tenant": config.tenant.model_copy(update={"app_role": "dbguard_explore_nobody"})})
    report = services.probe(dsn, cfg)
    assert report.leaks == []
    assert any(
        w.startswith("ledger.accounts: the application role cannot read it at all (permission denied")
        for w in report.warnings
    )
    # a role that reads the table gets no such warning
    assert not [w for w in services.probe(dsn, config).warnings if "cannot read it at all" in w]
