"""Two-party tables (issue 11): rows naming two tenants (a buyer and a seller) are audited and probed from each
side. A policy isolates such a table when every branch that can be true pins one party column to the tenant
context; a policy pinning only one party is an information finding (the other party cannot see its rows);
the probe's "row of tenant B" names B on every side, so tenant A must not read, change, delete or insert
one, nor move its own rows there."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbguard_pipeline import services
from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.verdicts import own_access
from dbguard_pipeline.policy import Analyzer
from dbguard_pipeline.semantics import tenancy

from .conftest import run_sql

REPROS = Path(__file__).parent / "repros" / "fixes-membership"
CTX = "(select nullif(current_setting('app.org', true), '')::uuid)"
CONFIG = Config(tenant=TenantModel(column="org_id", tenants_table="public.orgs", guc="app.org", app_role="shop"))
FARMS = Config(
    tenant=TenantModel(
        column="farm_id", tenants_table="public.farms", context="jwt", jwt_claim="tenant_id", app_role="authenticated"
    ),
    schemas=("public",),
)
A, B, C = (f"0000000{i}-0000-4000-8000-000000000000" for i in (1, 2, 3))
SCHEMA = f"""
do $$ begin if not exists (select 1 from pg_roles where rolname = 'shop') then create role shop nologin; end if; end $$;
create table public.orgs (id uuid primary key, name text not null);
insert into public.orgs values ('{A}', 'a'), ('{B}', 'b'), ('{C}', 'c');
create table public.deals (id bigint generated always as identity primary key,
  buyer_org_id uuid not null references public.orgs (id), seller_org_id uuid not null references public.orgs (id),
  amount numeric not null);
create index on public.deals (buyer_org_id); create index on public.deals (seller_org_id);
alter table public.deals enable row level security;
grant usage on schema public to shop;
grant select, insert, update, delete on public.deals to shop;
insert into public.deals (buyer_org_id, seller_org_id, amount)
  values ('{A}', '{B}', 1), ('{B}', '{A}', 2), ('{B}', '{C}', 3), ('{C}', '{B}', 4);
"""
BOTH = f"buyer_org_id = {CTX} OR seller_org_id = {CTX}"


def _setup(databases, policy: str) -> str:
    dsn = databases.create()
    run_sql(dsn, SCHEMA + policy)
    return dsn


def _rules(findings, *rules: str) -> set[str]:
    return {f.cache_key for f in findings if f.rule in rules}


def _leaks(report) -> set[tuple[str, str]]:
    return {(r.command, r.probe) for r in report.leaks if r.table == "deals"}


@pytest.mark.integration
def test_party_columns_come_from_foreign_keys_or_the_config(databases):
    dsn = _setup(
        databases,
        """create table public.notes (id int primary key, org_id uuid references public.orgs (id),
             shared_with uuid references public.orgs (id));
           create table public.swaps (id int primary key, left_org text, right_org text);""",
    )
    snap = services.introspect(dsn, CONFIG)
    notes, swaps = snap.table("public.notes"), snap.table("public.swaps")
    assert notes is not None and swaps is not None
    assert tenancy.party_columns(snap, notes, CONFIG) == ()  # has the tenant column: single-tenant
    assert tenancy.party_columns(snap, swaps, CONFIG) == ()
    listed = CONFIG.model_copy(
        update={
            "tenant": CONFIG.tenant.model_copy(
                update={
                    "table_tenant_columns": {"public.swaps": ("left_org", "right_org"), "public.notes": ("org_id",)}
                }
            )
        }
    )
    assert tenancy.party_columns(snap, swaps, listed) == ("left_org", "right_org")
    assert tenancy.party_columns(snap, notes, listed) == ()  # one column listed: not two-party


@pytest.mark.integration
def test_a_policy_pinning_each_party_isolates(databases):
    dsn = _setup(databases, f"create policy deals_parties on public.deals to shop using ({BOTH}) with check ({BOTH});")
    snap = services.introspect(dsn, CONFIG)
    deals = snap.table("public.deals")
    assert deals is not None and tenancy.party_columns(snap, deals, CONFIG) == ("buyer_org_id", "seller_org_id")
    findings = services.static_audit(snap, CONFIG).findings
    assert _rules(findings, "two_party_table") == {"two_party_table:public.deals"}
    assert not _rules(findings, "weak_rls_policy", "missing_with_check", "one_party_policy", "missing_tenant_column")
    report = services.probe(dsn, CONFIG)
    assert _leaks(report) == set(), [r.detail for r in report.leaks]
    probed = {r.probe for r in report.results if r.table == "deals"}
    assert {"select_other_tenant", "insert_for_other_tenant", "update_other_tenant", "move_row_to_other_tenant"} <= (
        probed
    )
    own = next(r for r in report.results if r.table == "deals" and r.probe == "select_other_tenant")
    assert "tenant A saw" in own.detail  # its own rows stay visible
    # the fix verdicts' own access: tenant A is buyer of one deal and seller of another, and sees both
    access, used, note = own_access(dsn, CONFIG, snap, "public.deals", (A, B))
    assert note == "" and used == (A, B)
    assert {(k, v.visible, v.others) for k, v in access.items()} == {("context", 2, 0)}


@pytest.mark.integration
def test_a_leaky_side_is_a_finding_and_a_leak(databases, tmp_path):
    leaky = f"buyer_org_id = {CTX} OR seller_org_id IS NOT NULL"
    dsn = _setup(databases, f"create policy deals_leaky on public.deals to shop using ({leaky}) with check ({BOTH});")
    findings = services.static_audit(services.introspect(dsn, CONFIG), CONFIG).findings
    assert _rules(findings, "weak_rls_policy") == {"weak_rls_policy:public.deals:deals_leaky"}
    report = services.probe(dsn, CONFIG)
    leaks = _leaks(report)
    assert ("select", "select_other_tenant") in leaks
    leak = next(r for r in report.leaks if r.table == "deals" and r.probe == "select_other_tenant")
    assert "of tenant B (naming B as buyer_org_id and seller_org_id, A as neither)" in leak.detail
    assert not {c for c, _ in leaks} & {"insert"}  # the writes are checked on both sides: only reads leak
    # the generator does not pick a party for it: one line, nothing written
    with pytest.raises(DbguardError, match="two-party data .buyer_org_id, seller_org_id each name a tenant."):
        services.generate_fixes(dsn, CONFIG, action="fix-rls-policy", table="public.deals", out_dir=str(tmp_path))
    assert not list(tmp_path.glob("*.sql"))


@pytest.mark.integration
def test_always_true_branch_is_weak(databases):
    dsn = _setup(
        databases, f"create policy deals_open on public.deals for select to shop using (buyer_org_id = {CTX} OR true);"
    )
    findings = services.static_audit(services.introspect(dsn, CONFIG), CONFIG).findings
    assert _rules(findings, "weak_rls_policy") == {"weak_rls_policy:public.deals:deals_open"}
    assert ("select", "select_other_tenant") in _leaks(services.probe(dsn, CONFIG))


@pytest.mark.integration
def test_a_write_check_naming_other_tenants_leaks_the_insert(databases):
    dsn = _setup(
        databases,
        f"create policy deals_parties on public.deals to shop using ({BOTH}) "
        f"with check (buyer_org_id = {CTX} OR seller_org_id IS NOT NULL);",
    )
    findings = services.static_audit(services.introspect(dsn, CONFIG), CONFIG).findings
    assert _rules(findings, "missing_with_check", "weak_rls_policy") == {
        "missing_with_check:public.deals:deals_parties"
    }
    leaks = _leaks(services.probe(dsn, CONFIG))
    # reads are isolated; a row naming tenant B on both sides gets in, and A's own row can be moved there by an
    # UPDATE that reads no column (one that does also meets the SELECT policy on the new row)
    assert leaks == {("insert", "insert_for_other_tenant"), ("update", "move_row_to_other_tenant_blind")}


@pytest.mark.integration
def test_one_party_policy_is_information_and_isolated(databases):
    dsn = _setup(
        databases,
        f"create policy deals_buyer on public.deals to shop using (buyer_org_id = {CTX}) "
        f"with check (buyer_org_id = {CTX});",
    )
    findings = services.static_audit(services.introspect(dsn, CONFIG), CONFIG).findings
    one = [f for f in findings if f.rule == "one_party_policy"]
    assert [f.cache_key for f in one] == ["one_party_policy:public.deals:seller_org_id"]
    assert one[0].severity.value == "info" and "cannot see" in one[0].message
    assert one[0].detail["commands"] == ["select", "insert", "update", "delete"]
    assert not _rules(findings, "weak_rls_policy", "missing_with_check")
    assert _leaks(services.probe(dsn, CONFIG)) == set()


@pytest.mark.integration
def test_f5_membership_over_both_parties(databases):
    """The f5 reproduction: membership through ``farm_id IN (buyer_farm_id, seller_farm_id)`` (printed by
    PostgreSQL as ``= ANY (ARRAY[...])``) pins each party: no weak policy, no single-tenant finding, and the
    probe finds no leak (its only trade names tenant A as seller: it is A's, not B's)."""
    dsn = databases.create()
    run_sql(dsn, (REPROS / "common.sql").read_text() + (REPROS / "f5_two_party.sql").read_text())
    snap = services.introspect(dsn, FARMS)
    findings = services.static_audit(snap, FARMS).findings
    assert _rules(findings, "two_party_table") == {"two_party_table:public.trades"}
    assert not _rules(findings, "weak_rls_policy", "missing_tenant_column", "one_party_policy")
    trades = snap.table("public.trades")
    assert trades is not None
    policy = trades.policies[0]
    analysis = Analyzer(snap, FARMS).analyze(policy.using, table=trades)
    assert analysis.pins_tenant and analysis.sides == ("buyer_farm_id", "seller_farm_id")
    report = services.probe(dsn, FARMS)
    assert [r for r in report.leaks if r.table == "trades"] == []
    access, _used, _note = own_access(dsn, FARMS, snap, "public.trades")
    assert access and all(v.visible == 1 for v in access.values())  # farm A sells the one trade, and sees it


@pytest.mark.integration
def test_listed_party_columns_without_foreign_keys_are_probed_from_each_side(databases):
    """A table the config lists, whose party columns reference nothing (and an empty tenants table): the probe
    takes tenants A and B from the party columns and finds the one-sided policy leaky."""
    dsn = databases.create()
    run_sql(
        dsn,
        f"""do $$ begin if not exists (select 1 from pg_roles where rolname = 'shop') then create role shop nologin; end if; end $$;
        create table public.orgs (id uuid primary key);
        create table public.swaps (id int primary key, left_org uuid not null, right_org uuid not null);
        insert into public.swaps values (1, '{A}', '{B}'), (2, '{B}', '{B}'), (3, '{A}', '{A}');
        alter table public.swaps enable row level security;
        create policy swaps_left on public.swaps for select to shop using (left_org = {CTX} OR right_org IS NOT NULL);
        grant usage on schema public to shop; grant select on public.swaps to shop;""",
    )
    listed = CONFIG.model_copy(
        update={
            "tenant": CONFIG.tenant.model_copy(
                update={"table_tenant_columns": {"public.swaps": ("left_org", "right_org")}}
            )
        }
    )
    findings = services.static_audit(services.introspect(dsn, listed), listed).findings
    assert _rules(findings, "two_party_table", "weak_rls_policy") == {
        "two_party_table:public.swaps",
        "weak_rls_policy:public.swaps:swaps_left",
    }
    report = services.probe(dsn, listed, ["public.swaps"])
    # tenants A and B come from the party columns (the tenants table is empty): both real tenants of the rows
    assert (report.tenant_context["tenant_a"], report.tenant_context["tenant_b"]) == (A, B)
    assert {(r.command, r.probe) for r in report.leaks} == {
        ("select", "select_other_tenant"),
        ("select", "select_without_context"),  # right_org IS NOT NULL needs no context at all
    }
