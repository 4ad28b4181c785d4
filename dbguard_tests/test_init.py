"""`dbguard init`: a dbguard.yaml inferred from the database, each line saying why, loadable by load_config."""

from __future__ import annotations

import pytest

from dbguard_pipeline import services
from dbguard_pipeline.config import Config, load_config
from dbguard_pipeline.inference import infer

from .conftest import run_sql
from .test_cli_foundation import assert_one_line_error, dbguard


def test_init_on_the_demo_writes_the_config_the_demo_needs(demo_dsn, tmp_path):
    out = tmp_path / "dbguard.yaml"
    proc = dbguard("init", "--dsn", demo_dsn, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "could not decide" not in proc.stderr
    config = load_config(out)
    assert config.tenant == Config().tenant
    assert config.schemas == ()
    tenant_lines = [ln for ln in out.read_text().splitlines() if ln.startswith("  ")]
    assert tenant_lines and all("  # " in ln for ln in tenant_lines), out.read_text()


def test_init_refuses_to_overwrite_without_force(demo_dsn, tmp_path):
    out = tmp_path / "dbguard.yaml"
    out.write_text("tenant:\n  column: mine\n")
    assert_one_line_error(dbguard("init", "--dsn", demo_dsn, "--out", str(out)), "--force")
    assert out.read_text() == "tenant:\n  column: mine\n"
    assert dbguard("init", "--dsn", demo_dsn, "--out", str(out), "--force").returncode == 0
    assert load_config(out).tenant.column == "tenant_id"
    to_stdout = dbguard("init", "--dsn", demo_dsn, "--out", "-")
    assert to_stdout.returncode == 0 and to_stdout.stdout.startswith("# dbguard.yaml written by `dbguard init`")


def test_init_says_what_it_could_not_decide(empty_dsn, tmp_path):
    run_sql(empty_dsn, "create table notes (id int primary key, body text);")
    out = tmp_path / "dbguard.yaml"
    proc = dbguard("init", "--dsn", empty_dsn, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    undecided = [ln for ln in proc.stderr.splitlines() if "could not decide" in ln]
    assert any("tenant column" in ln for ln in undecided) and any("context" in ln for ln in undecided)
    assert "NOT DECIDED" in out.read_text()
    assert load_config(out).tenant == Config().tenant  # the defaults, said to be defaults


NESTED_CLAIM = """
do $$ begin if not exists (select 1 from pg_roles where rolname = 'init_web') then create role init_web nologin;
end if; end $$;
create schema app;
create table app.orgs (id bigint primary key);
create table app.projects (id int primary key, org_id bigint not null references app.orgs (id));
create table app.tasks (id int primary key, org_id bigint not null references app.orgs (id),
                        owner_id int references app.projects (id));
alter table app.projects enable row level security;
alter table app.tasks enable row level security;
create policy p on app.projects for all to init_web
  using (org_id = ((nullif(current_setting('request.jwt.claims', true), '')::jsonb -> 'app_metadata') ->> 'org')::bigint);
create policy t on app.tasks for all to init_web
  using (org_id = (current_setting('request.jwt.claims', true)::jsonb #>> '{app_metadata,org}')::bigint);
"""

NO_FOREIGN_KEYS = """
create table public.accounts (id int primary key, name text);
create table public.docs (id int primary key, account_id int not null);
create table public.files (id int primary key, account_id int not null);
create function public.current_account() returns int language sql stable
  as $$ select nullif(current_setting('acme.account', true), '')::int $$;
alter table public.docs enable row level security;
alter table public.files enable row level security;
create policy d on public.docs using (account_id = public.current_account());
create policy f on public.files using (account_id = (select public.current_account()));
grant select, insert on public.docs, public.files to init_svc;
"""


@pytest.fixture
def fresh_role(server_dsn):
    run_sql(
        server_dsn,
        "do $$ begin if not exists (select 1 from pg_roles where rolname = 'init_svc') "
        "then create role init_svc nologin; end if; end $$;",
    )
    return "init_svc"


def test_a_nested_jwt_claim_a_bigint_column_and_a_schema(empty_dsn):
    run_sql(empty_dsn, NESTED_CLAIM)
    inf = infer(services.introspect(empty_dsn))
    config = inf.config()
    assert (config.tenant.column, config.tenant.column_type) == ("org_id", "bigint")
    assert (config.tenant.tenants_table, config.tenant.tenants_key) == ("app.orgs", "id")
    assert (config.tenant.context, config.tenant.jwt_claim) == ("jwt", "app_metadata.org")
    assert config.tenant.app_role == "init_web"
    assert config.schemas == ("app",)
    assert "app_metadata.org" in inf.reasons["tenant.jwt_claim"]


def test_without_foreign_keys_by_name_and_a_context_function(empty_dsn, fresh_role):
    run_sql(empty_dsn, NO_FOREIGN_KEYS)
    inf = infer(services.introspect(empty_dsn))
    config = inf.config()
    assert config.tenant.column == "account_id"
    assert config.tenant.column_type == "integer"
    assert config.tenant.tenants_table == "public.accounts"
    assert config.tenant.context_functions == ("public.current_account",)
    assert config.tenant.app_role == fresh_role  # policies TO PUBLIC: the role granted the tables
    assert "no foreign keys" in inf.reasons["tenant.column"]
