"""Second round of schemas written the way other teams write them (repros/explore2/): a makerkit-style starter
(memberships with a role enum, invitations readable by the invitee's email, a SECURITY DEFINER membership helper,
a security_invoker view and a plain one), tenancy in schema `app` with a bigint org_id, composite keys, identity
ALWAYS and generated columns, and RESTRICTIVE policies TO a group role the login role inherits. Each answer is
judged against what the application role sees with each tenant's context."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dbguard_pipeline import services
from dbguard_pipeline.config import Config, load_config

from .conftest import run_sql
from .isolation_helpers import supabase_shim
from .test_explore_repros import as_app, jwt

pytestmark = pytest.mark.security

HERE = Path(__file__).resolve().parent / "repros" / "explore2"
ROOT = Path(__file__).resolve().parent.parent
MEMBER_A = "00000000-0000-0000-0000-0000000000a2"


def load(databases, name: str, shim: bool = False) -> tuple[str, Config]:
    dsn = databases.create()
    if shim:
        run_sql(dsn, supabase_shim())
    run_sql(dsn, (HERE / f"{name}.sql").read_text(encoding="utf-8"))
    return dsn, load_config(HERE / f"{name}.yaml")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "dbguard_pipeline.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


# --------------------------------------------------------------------------- makerkit
def test_init_takes_no_jwt_claim_from_an_invitation_email_check(databases, tmp_path):
    """Every tenant policy goes through has_role_on_organization(); the one `auth.jwt() ->> 'email'` (invitations
    readable by the invitee) compares the claim with `email`, never with organization_id. init used to write
    `jwt_claim: email` ("10 policy expressions compare organization_id with the JWT claim email"), which a fix
    migration would then compare with organization_id."""
    dsn, expected = load(databases, "makerkit", shim=True)
    proc = cli("init", "--dsn", dsn, "--out", str(tmp_path / "dbguard.yaml"))
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "dbguard.yaml").read_text()
    assert "jwt_claim: email" not in text
    assert "membership helper public.has_role_on_organization" in text
    got = load_config(tmp_path / "dbguard.yaml").tenant
    assert got.jwt_claim == expected.tenant.jwt_claim == "tenant_id"
    assert (got.context, got.app_role, got.column) == ("jwt", "authenticated", "organization_id")


def test_makerkit_truth_and_answers(databases, tmp_path):
    dsn, config = load(databases, "makerkit", shim=True)
    # the truth: the plain view shows team B's task to team A's member, the security_invoker view does not
    assert as_app(dsn, "authenticated", jwt(MEMBER_A), "select title from public.task_list order by 1") == [
        ("a task",),
        ("b task",),
    ]
    invoker = "select name from public.project_task_counts order by 1"
    assert as_app(dsn, "authenticated", jwt(MEMBER_A), invoker) == [("alpha",)]
    report = services.probe(dsn, config)
    assert {r.qualified for r in report.leaks} == {"public.task_list"}
    result = services.audit(dsn, config)
    assert {f.cache_key for f in result.findings if f.severity.name.lower() == "critical"} == {
        "security_definer_view:public.task_list"
    }


def test_all_plans_an_index_on_the_tenants_table_instead_of_pointing_at_fix_rls_policy(databases, tmp_path):
    """The tenants table waits for an explicit command only for access changes; an unindexed foreign key on it
    (organizations.primary_owner_user_id) was skipped with advice to run fix-rls-policy."""
    dsn, config = load(databases, "makerkit", shim=True)
    result = services.generate_fixes(
        dsn, config, out_dir=str(tmp_path / "m"), round_trip="yes", timestamp="20260101000000"
    )
    assert result.rejected == []
    assert not [s for s in result.skipped if "unindexed_foreign_key" in s]
    # the leaking plain view has no automatic fix: --all says so rather than nothing
    assert [m for m in result.manual if m.startswith("security_definer_view:public.task_list [critical]")]
    services.migrator(dsn, tmp_path / "m").up()
    after = services.audit(dsn, config)
    assert not [f for f in after.findings if f.rule == "unindexed_foreign_key"]
    # the fix changed no access: the member still sees team A's projects only
    assert as_app(dsn, "authenticated", jwt(MEMBER_A), "select name from public.projects") == [("alpha",)]


# --------------------------------------------------------------------------- app.org_id bigint, composite keys
def test_app_bigint_loop_keeps_identity_and_generated_columns_working(databases, tmp_path):
    dsn, config = load(databases, "app_bigint")
    a = {"app.org_id": "1"}
    assert as_app(dsn, "crm_app", a, "select org_id from app.orders order by 1") == [(1,), (2,)]  # open
    assert {r.qualified for r in services.probe(dsn, config).leaks} == {"app.orders"}
    result = services.generate_fixes(
        dsn, config, out_dir=str(tmp_path / "m"), round_trip="yes", timestamp="20260101000000"
    )
    assert result.rejected == []
    services.migrator(dsn, tmp_path / "m").up()
    assert as_app(dsn, "crm_app", a, "select org_id, total_with_tax from app.orders") == [(1, 12)]
    add = "insert into app.orders (org_id, customer_id, total) values (%s, %s, 5)"
    assert as_app(dsn, "crm_app", a, add, (1, 1)) == 1
    assert isinstance(as_app(dsn, "crm_app", a, add, (2, 2)), Exception)
    assert services.probe(dsn, config).leaks == []


# --------------------------------------------------------------------------- restrictive + group roles
@pytest.mark.parametrize("app_role", ["web_users", "web_login"])
def test_restrictive_and_group_role_policies_judged_and_fixed(databases, tmp_path, app_role):
    """init names the group role; configured as the login role that inherits it, the fix for attachments used
    to add a FOR ALL policy TO web_login ("no policy applies" to it: memberships ignored), which granted the
    writes no policy granted and was refused by the round trip."""
    dsn, config = load(databases, "restrictive")
    config = config.model_copy(update={"tenant": config.tenant.model_copy(update={"app_role": app_role})})
    a = {"app.tenant": "00000000-0000-0000-0000-00000000000a"}
    for table, n in (("documents", 1), ("comments", 1), ("attachments", 2), ("notes", 2)):
        assert as_app(dsn, "web_login", a, f"select count(*) from saas.{table}") == [(n,)], table
    assert {r.qualified for r in services.probe(dsn, config).leaks} == {"saas.attachments", "saas.notes"}
    weak = {f.cache_key for f in services.audit(dsn, config).findings if f.rule == "weak_rls_policy"}
    assert weak == {"weak_rls_policy:saas.attachments:attachments_open", "weak_rls_policy:saas.notes:notes_public_read"}
    result = services.generate_fixes(
        dsn, config, out_dir=str(tmp_path / "m"), round_trip="yes", timestamp="20260101000000"
    )
    assert result.rejected == []
    assert not [f for f in (tmp_path / "m").glob("*.sql") if "tenant_isolation" in f.read_text()]
    services.migrator(dsn, tmp_path / "m").up()
    # writes stay as the policies granted them: none on attachments
    assert isinstance(as_app(dsn, "web_login", a, "delete from saas.attachments"), int)
    assert as_app(dsn, "web_login", a, "delete from saas.attachments") == 0
    for table in ("documents", "comments", "attachments", "notes"):
        assert as_app(dsn, "web_login", a, f"select count(*) from saas.{table}") == [(1,)], table
    add = "insert into saas.notes values (9, %s, 'x')"
    assert as_app(dsn, "web_login", a, add, ("00000000-0000-0000-0000-00000000000a",)) == 1
    assert isinstance(as_app(dsn, "web_login", a, add, ("00000000-0000-0000-0000-00000000000b",)), Exception)
    assert services.probe(dsn, config).leaks == []


def test_partitions_granted_to_the_group_role_get_the_parents_policy(databases, tmp_path):
    """A partition the login role reaches only through its group role's grant is queried directly by the app:
    the fix on the parent must cover it (it was judged unreachable and left without RLS)."""
    dsn, config = load(databases, "restrictive")
    config = config.model_copy(update={"tenant": config.tenant.model_copy(update={"app_role": "web_login"})})
    run_sql(
        dsn,
        """
        create table saas.events (id int not null, tenant_id uuid not null references saas.tenants (id),
            at date not null, primary key (id, at)) partition by range (at);
        create table saas.events_2026 partition of saas.events for values from ('2026-01-01') to ('2027-01-01');
        create index on saas.events (tenant_id);
        grant select, insert, update, delete on saas.events, saas.events_2026 to web_users;
        insert into saas.events values (1, '00000000-0000-0000-0000-00000000000a', '2026-02-01'),
                                       (2, '00000000-0000-0000-0000-00000000000b', '2026-02-01');
        """,
    )
    a = {"app.tenant": "00000000-0000-0000-0000-00000000000a"}
    assert as_app(dsn, "web_login", a, "select count(*) from saas.events_2026") == [(2,)]  # open
    result = services.generate_fixes(
        dsn, config, out_dir=str(tmp_path / "m"), round_trip="yes", timestamp="20260101000000"
    )
    assert result.rejected == []
    services.migrator(dsn, tmp_path / "m").up()
    assert as_app(dsn, "web_login", a, "select count(*) from saas.events_2026") == [(1,)]
    assert as_app(dsn, "web_login", a, "select count(*) from saas.events") == [(1,)]
    assert services.probe(dsn, config).leaks == []


# --------------------------------------------------------------------------- SECURITY DEFINER functions
DEFINER_RULE = "security_definer_reads_other_tenants"
SEARCH_KEY = f"{DEFINER_RULE}:app.search_customers:search_customers(q text)"


def test_app_bigint_definer_search_function_leaks_and_is_reported(databases):
    """app.search_customers() is SECURITY DEFINER, owned by the superuser, granted to crm_app, and reads
    app.customers with no tenant filter: validate and test-isolation said nothing about it."""
    dsn, config = load(databases, "app_bigint")
    a = {"app.org_id": "1"}
    # the truth: the table shows tenant 1 its own customer, the function shows it tenant 2's as well
    assert as_app(dsn, "crm_app", a, "select org_id from app.customers") == [(1,)]
    search = "select org_id, email from app.search_customers('') order by 1"
    assert as_app(dsn, "crm_app", a, search) == [(1, "x@a.test"), (2, "y@b.test")]

    result = services.audit(dsn, config)
    found = [f for f in result.findings if f.rule == DEFINER_RULE]
    assert [f.cache_key for f in found] == [SEARCH_KEY]
    f = found[0]
    assert f.severity.value == "critical"
    assert "app.customers" in f.message and "crm_app may execute it" in f.message
    assert "returns other tenants' rows" in f.message
    assert f.detail["callers"] == ["crm_app"] and f.detail["returns_rows"] is True
    assert "WHERE \"org_id\" = nullif(current_setting('app.org_id', true), '')::bigint" in f.remediation
    assert 'REVOKE EXECUTE ON FUNCTION "app"."search_customers"(q text) FROM "crm_app";' in f.remediation

    proc = cli("validate", "--dsn", dsn, "--config", str(HERE / "app_bigint.yaml"))
    assert SEARCH_KEY.split(":")[0] in proc.stdout and "search_customers" in proc.stdout, proc.stderr

    # the remediation it names closes the leak, and the finding goes with it
    run_sql(
        dsn,
        """
        create or replace function app.search_customers(q text) returns setof app.customers
        language sql stable security definer set search_path = '' as $$
          select * from app.customers c where c.email like '%' || q || '%'
            and c.org_id = nullif(current_setting('app.org_id', true), '')::bigint
        $$;
        """,
    )
    assert as_app(dsn, "crm_app", a, search) == [(1, "x@a.test")]
    after = services.audit(dsn, config, with_metrics=False)
    assert not [f for f in after.findings if f.rule == DEFINER_RULE]


def _repro_databases() -> dict[str, tuple[tuple[Path, ...], Path]]:
    from .test_init_repros import CASES

    out = dict(CASES)
    for folder in ("explore", "explore2"):
        for p in sorted((HERE.parent / folder).glob("*.sql")):
            if p.stem != "app_bigint":
                out[f"{folder}/{p.stem}"] = ((p,), p.with_suffix(".yaml"))
    return out


@pytest.mark.parametrize("name", sorted(_repro_databases()))
def test_definer_helpers_of_the_other_repros_are_not_reported(databases, name):
    """Every other reproduction database: its SECURITY DEFINER functions are membership helpers keyed by the
    caller (auth.uid()), or there are none; the rule must stay quiet on them."""
    from .test_init_repros import load_repro

    files, config_file = _repro_databases()[name]
    dsn = databases.create()
    load_repro(dsn, files)
    config = load_config(config_file)
    snapshot = services.introspect(dsn, config)
    assert not [f.cache_key for f in services.static_audit(snapshot, config).findings if f.rule == DEFINER_RULE]


def test_definer_helpers_of_the_demo_are_not_reported(demo_dsn):
    config = Config()
    snapshot = services.introspect(demo_dsn, config)
    assert {f.name for f in snapshot.functions if f.schema == "auth"} >= {"uid", "jwt"}  # read, not in scope
    assert not [f for f in services.static_audit(snapshot, config).findings if f.rule == DEFINER_RULE]


def test_enabling_rls_under_a_leaking_definer_function_is_not_rejected(databases, tmp_path):
    """A SECURITY DEFINER function over app.orders (RLS forgotten) leaks before the fix and after it (its
    superuser owner bypasses the new policy): the finding is the same before and after, so the round trip
    does not reject the fix that closes the table."""
    dsn, config = load(databases, "app_bigint")
    run_sql(
        dsn,
        """
        create function app.order_total() returns numeric language sql stable security definer
          set search_path = '' as $$ select sum(total) from app.orders $$;
        revoke execute on function app.order_total() from public;
        grant execute on function app.order_total() to crm_app;
        """,
    )
    key = f"{DEFINER_RULE}:app.order_total:order_total()"
    before = {f.cache_key: f for f in services.audit(dsn, config, with_metrics=False).findings}
    assert before[key].severity.value == "warning"
    assert "row level security is off on app.orders" in before[key].message
    result = services.generate_fixes(
        dsn, config, out_dir=str(tmp_path / "m"), round_trip="yes", timestamp="20260101000000"
    )
    assert result.rejected == []
    services.migrator(dsn, tmp_path / "m").up()
    a = {"app.org_id": "1"}
    assert as_app(dsn, "crm_app", a, "select sum(total) from app.orders") == [(10,)]  # the table is closed
    assert as_app(dsn, "crm_app", a, "select app.order_total()") == [(30,)]  # the function is not
    after = {f.cache_key: f for f in services.audit(dsn, config, with_metrics=False).findings}
    assert "SUPERUSER" in after[key].message
