"""Regression tests of the probe's blind spots (issue #10): partitions and inheritance children, "join another
tenant" inserts, tables keyed by the tenant, each on its reproduction and then on its family."""
from __future__ import annotations

import pytest

from dbguard_pipeline import services
from dbguard_pipeline.config import Config, TenantModel

from .isolation_helpers import APP, ROLES_SQL, TENANT_A, TENANT_B, TENANTS_SQL, USER_A, scratch_database, supabase_shim
from .probe2_helpers import repro_database

pytestmark = pytest.mark.security

ALL = ("select", "insert", "update", "delete")
CTX = "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"
GUC = Config(tenant=TenantModel(app_role=APP))


def verdicts(report, q: str) -> dict[str, str]:
    return {cmd: report.outcome(q, cmd)[0] for cmd in report.commands_of(q)}


def result(report, q: str, probe_name: str):
    (r,) = [r for r in report.results if r.qualified == q and r.probe == probe_name]
    return r


# --------------------------------------------------------------------------- partitions
def test_partitions_repro_each_partition_leaks_on_every_command(server_dsn):
    with repro_database(server_dsn, "partitions") as (dsn, config):
        report = services.probe(dsn, config)
    assert report.tables == ["public.meter_readings", "public.meter_readings_2026q1", "public.meter_readings_2026q2"]
    assert verdicts(report, "public.meter_readings") == dict.fromkeys(ALL, "isolated")
    for part in ("public.meter_readings_2026q1", "public.meter_readings_2026q2"):
        assert verdicts(report, part) == dict.fromkeys(ALL, "leak")
    witness = result(report, "public.meter_readings_2026q1", "select_other_tenant").detail
    assert "returned 21 rows of tenant B" in witness and "partition's own row level security" in witness
    assert report.not_probed == []
    # the static audit does not see it yet: the report says the two views disagree on each partition
    assert set(report.disagreements) == {"public.meter_readings_2026q1", "public.meter_readings_2026q2"}


FAMILY_SQL = ROLES_SQL + TENANTS_SQL + f"""
-- two levels of partitions and a default partition; RLS on the root only
CREATE TABLE public.events (tenant_id uuid NOT NULL REFERENCES public.tenants (id), id int NOT NULL,
    region text NOT NULL, day date NOT NULL, PRIMARY KEY (tenant_id, id, region, day)) PARTITION BY LIST (region);
CREATE TABLE public.events_eu PARTITION OF public.events FOR VALUES IN ('eu') PARTITION BY RANGE (day);
CREATE TABLE public.events_eu_2026 PARTITION OF public.events_eu FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE public.events_other PARTITION OF public.events DEFAULT;
ALTER TABLE public.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.events FOR ALL TO {APP} USING (tenant_id = {CTX}) WITH CHECK (tenant_id = {CTX});
INSERT INTO public.events SELECT t.id, g, r, date '2026-03-01' FROM public.tenants t, generate_series(1, 3) g,
    unnest(array['eu', 'us']) r;

-- the same, with every partition given its own RLS and policy: isolated everywhere
CREATE TABLE public.safe_events (tenant_id uuid NOT NULL REFERENCES public.tenants (id), id int NOT NULL,
    day date NOT NULL, PRIMARY KEY (tenant_id, id, day)) PARTITION BY RANGE (day);
CREATE TABLE public.safe_events_2026 PARTITION OF public.safe_events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE public.safe_events_rest PARTITION OF public.safe_events DEFAULT;
INSERT INTO public.safe_events SELECT t.id, g, date '2026-03-01' FROM public.tenants t, generate_series(1, 3) g;
DO $$ DECLARE r text; BEGIN
  FOREACH r IN ARRAY array['safe_events', 'safe_events_2026', 'safe_events_rest'] LOOP
    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', r);
    EXECUTE format('CREATE POLICY p ON public.%I FOR ALL TO {APP} USING (tenant_id = {CTX.replace("'", "''")}) '
                   'WITH CHECK (tenant_id = {CTX.replace("'", "''")})', r);
  END LOOP; END $$;

-- inheritance: the parent is isolated, its child (RLS off) is not; child rows share ctids with parent rows
CREATE TABLE public.notes (tenant_id uuid NOT NULL REFERENCES public.tenants (id), body text NOT NULL);
CREATE TABLE public.notes_archive () INHERITS (public.notes);
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.notes FOR ALL TO {APP} USING (tenant_id = {CTX}) WITH CHECK (tenant_id = {CTX});
INSERT INTO public.notes SELECT id, 'live' FROM public.tenants;
INSERT INTO public.notes_archive SELECT id, 'old' FROM public.tenants;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP};
"""


@pytest.fixture(scope="module")
def family(server_dsn):
    with scratch_database(server_dsn, FAMILY_SQL) as dsn:
        yield services.probe(dsn, GUC)


def test_every_partition_level_and_the_default_partition_is_probed(family):
    assert family.tables[:4] == ["public.events", "public.events_eu", "public.events_eu_2026", "public.events_other"]
    assert verdicts(family, "public.events") == dict.fromkeys(ALL, "isolated")
    for part in ("public.events_eu", "public.events_eu_2026", "public.events_other"):
        assert verdicts(family, part) == dict.fromkeys(ALL, "leak"), part


def test_partitions_with_their_own_policies_are_isolated(family):
    for q in ("public.safe_events", "public.safe_events_2026", "public.safe_events_rest"):
        assert verdicts(family, q) == dict.fromkeys(ALL, "isolated"), q


def test_inheritance_child_is_probed_and_parent_rows_are_told_apart_from_the_childs(family):
    assert verdicts(family, "public.notes") == dict.fromkeys(ALL, "isolated")
    assert verdicts(family, "public.notes_archive") == dict.fromkeys(ALL, "leak")
    # through the parent, tenant B has a row in each table (same ctid in both): both are targeted, none seen
    assert result(family, "public.notes", "select_other_tenant").detail.endswith("(2 targeted) (tenant A saw 2 of its 2)")
    assert family.not_probed == []


# --------------------------------------------------------------------------- join another tenant
def test_self_join_repro_leaks_on_insert_with_its_own_witness(server_dsn):
    with repro_database(server_dsn, "self_join") as (dsn, config):
        report = services.probe(dsn, config)
    assert verdicts(report, "public.club_members")["insert"] == "leak"
    r = result(report, "public.club_members", "join_other_tenant")
    assert not r.isolated and r.command == "insert"
    assert "tenant A's user made himself a member of tenant B" in r.detail
    assert result(report, "public.club_members", "insert_for_other_tenant").isolated
    assert "public.club_members" not in report.disagreements  # the audit's missing_with_check, now confirmed
    assert not [r for r in report.results if r.qualified == "public.bookings" and r.probe == "join_other_tenant"]


MEMBERSHIP_SQL = f"""
INSERT INTO public.tenants VALUES ('{TENANT_A}', 'A'), ('{TENANT_B}', 'B');
INSERT INTO auth.users (id, email) VALUES ('{USER_A}', 'a@x.test'), ('00000000-0000-0000-0000-0000000000f3', 'b@x.test');
-- composite key, INSERT checks only the user
CREATE TABLE public.members_pk (user_id uuid NOT NULL REFERENCES auth.users (id),
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), PRIMARY KEY (user_id, tenant_id));
-- surrogate key, the user compared through the JWT's sub claim, no foreign key to the users
CREATE TABLE public.members_id (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, person uuid NOT NULL,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), UNIQUE (person, tenant_id));
-- composite key, INSERT checks the user and that the tenant is one of the caller's
CREATE TABLE public.members_safe (user_id uuid NOT NULL REFERENCES auth.users (id),
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), PRIMARY KEY (user_id, tenant_id));
INSERT INTO public.members_pk VALUES ('{USER_A}', '{TENANT_A}'), ('00000000-0000-0000-0000-0000000000f3', '{TENANT_B}');
INSERT INTO public.members_id (person, tenant_id) SELECT user_id, tenant_id FROM public.members_pk;
INSERT INTO public.members_safe SELECT * FROM public.members_pk;
ALTER TABLE public.members_pk ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.members_id ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.members_safe ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON public.members_pk FOR SELECT TO authenticated USING (user_id = (select auth.uid()));
CREATE POLICY i ON public.members_pk FOR INSERT TO authenticated WITH CHECK (user_id = (select auth.uid()));
CREATE POLICY r ON public.members_id FOR SELECT TO authenticated
    USING (person = ((select auth.jwt()) ->> 'sub')::uuid);
CREATE POLICY i ON public.members_id FOR INSERT TO authenticated
    WITH CHECK (person = ((select auth.jwt()) ->> 'sub')::uuid);
CREATE POLICY r ON public.members_safe FOR SELECT TO authenticated USING (user_id = (select auth.uid()));
CREATE POLICY i ON public.members_safe FOR INSERT TO authenticated
    WITH CHECK (user_id = (select auth.uid()) AND tenant_id = ((select auth.jwt()) ->> 'tenant_id')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO authenticated;
"""


def test_join_another_tenant_on_membership_tables_with_and_without_a_composite_key(server_dsn):
    shim_tenants = "CREATE TABLE public.tenants (id uuid PRIMARY KEY, name text NOT NULL);"
    config = Config(tenant=TenantModel(context="jwt", app_role="authenticated"))
    with scratch_database(server_dsn, supabase_shim(), shim_tenants, MEMBERSHIP_SQL) as dsn:
        report = services.probe(dsn, config)
    for q in ("public.members_pk", "public.members_id"):
        r = result(report, q, "join_other_tenant")
        assert not r.isolated, (q, r.detail)
        assert verdicts(report, q)["insert"] == "leak"
    assert "(person)" in result(report, "public.members_id", "join_other_tenant").detail
    safe = result(report, "public.members_safe", "join_other_tenant")
    assert safe.isolated and "violates row-level security" in safe.detail


# --------------------------------------------------------------------------- tables keyed by the tenant
def test_tenant_keyed_repro_held_and_leak_instead_of_not_probed(server_dsn):
    with repro_database(server_dsn, "tenant_keyed_insert") as (dsn, config):
        report = services.probe(dsn, config)
    assert report.not_probed == []
    assert verdicts(report, "public.studio_branding") == dict.fromkeys(ALL, "isolated")
    assert verdicts(report, "public.studio_quotas")["insert"] == "leak"
    witness = result(report, "public.studio_quotas", "insert_for_other_tenant").detail
    assert "row level security admitted" in witness and "studio_quotas_pkey" in witness
    assert "violates row-level security" in result(report, "public.studio_branding", "insert_for_other_tenant").detail
