"""A database with planted slow row level security, for ``dbguard analyze`` (its tests and bench/bench_analyze.py).

Supabase-style tenancy (JWT claims, role ``authenticated``, the shim of the demo). Each planted table has one
known cause, and one table is done right:

============================  ==========================================================================
public.orders                 ``tenant_id = (auth.jwt() ->> 'tenant_id')::uuid``: auth.jwt() unwrapped,
                              evaluated per row (it is not inlinable: it sets search_path)
public.invoices               ``tenant_id = (current_setting('request.jwt.claims', true)::jsonb ->> ...)``:
                              current_setting() and a JSON parse per row
public.projects               ``tenant_id IN (SELECT tenant_id FROM memberships WHERE user_id = (select
                              auth.uid()))``; memberships has no index on user_id
public.events                 ``tenant_id = public.current_tenant_id()``, a VOLATILE plpgsql helper, and no
                              index leads with tenant_id (1,000,000 rows in the bench)
public.notes                  two permissive policies OR-ed (the tenant's notes, or any public note)
public.customers              done right: wrapped context, tenant index (nothing to suggest)
public.customer_contacts      no tenant column: reaches tenants through customers (a join statement)
============================  ==========================================================================

    python -m bench.planted --dsn URL [--scale bench|test]
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib import resources

from psycopg import sql

from dbguard_pipeline.pg.session import connect


@dataclass(frozen=True)
class Scale:
    tenants: int = 100
    users_per_tenant: int = 2_000
    orders: int = 200_000
    invoices: int = 200_000
    projects: int = 50_000
    events: int = 1_000_000
    notes: int = 50_000
    customers: int = 20_000


BENCH = Scale()
TEST = Scale(tenants=20, users_per_tenant=500, orders=20_000, invoices=20_000, projects=5_000, events=30_000,
             notes=5_000, customers=2_000)

CONFIG = {"tenant": {"context": "jwt", "jwt_claim": "tenant_id", "app_role": "authenticated"}}

_JWT = "(auth.jwt() ->> 'tenant_id')::uuid"
_CLAIM = "(current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')::uuid"
_WRAPPED = "(select (auth.jwt() ->> 'tenant_id')::uuid)"

SCHEMA = f"""
CREATE TABLE public.tenants (id uuid PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.memberships (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES auth.users (id),
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    role text NOT NULL DEFAULT 'member');
CREATE INDEX memberships_tenant_id_idx ON public.memberships (tenant_id);  -- none on user_id: planted
ALTER TABLE public.memberships ENABLE ROW LEVEL SECURITY;
CREATE POLICY memberships_own ON public.memberships FOR SELECT TO authenticated
    USING (user_id = (select auth.uid()));

CREATE TABLE public.orders (id bigint PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    amount numeric NOT NULL, created_at timestamptz NOT NULL);
CREATE INDEX orders_tenant_id_idx ON public.orders (tenant_id);
ALTER TABLE public.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY orders_tenant ON public.orders FOR ALL TO authenticated
    USING (tenant_id = {_JWT}) WITH CHECK (tenant_id = {_JWT});

CREATE TABLE public.invoices (id bigint PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    total numeric NOT NULL, issued_on date NOT NULL);
CREATE INDEX invoices_tenant_id_idx ON public.invoices (tenant_id);
ALTER TABLE public.invoices ENABLE ROW LEVEL SECURITY;
CREATE POLICY invoices_tenant ON public.invoices FOR ALL TO authenticated
    USING (tenant_id = {_CLAIM}) WITH CHECK (tenant_id = {_CLAIM});

CREATE TABLE public.projects (id bigint PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    name text NOT NULL);
CREATE INDEX projects_tenant_id_idx ON public.projects (tenant_id);
ALTER TABLE public.projects ENABLE ROW LEVEL SECURITY;
CREATE POLICY projects_members ON public.projects FOR ALL TO authenticated
    USING (tenant_id IN (SELECT m.tenant_id FROM public.memberships m WHERE m.user_id = (select auth.uid())));

CREATE FUNCTION public.current_tenant_id() RETURNS uuid LANGUAGE plpgsql AS $$
BEGIN
  RETURN (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'tenant_id')::uuid;
END
$$;
CREATE TABLE public.events (id bigint PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    kind text NOT NULL, at timestamptz NOT NULL);  -- no index leads with tenant_id: planted
ALTER TABLE public.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY events_tenant ON public.events FOR ALL TO authenticated
    USING (tenant_id = public.current_tenant_id()) WITH CHECK (tenant_id = public.current_tenant_id());

CREATE TABLE public.notes (id bigint PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    is_public boolean NOT NULL DEFAULT false, body text NOT NULL);
CREATE INDEX notes_tenant_id_idx ON public.notes (tenant_id);
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_tenant ON public.notes FOR SELECT TO authenticated USING (tenant_id = {_WRAPPED});
CREATE POLICY notes_public ON public.notes FOR SELECT TO authenticated USING (is_public);

CREATE TABLE public.customers (id bigint PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    name text NOT NULL);
CREATE INDEX customers_tenant_id_idx ON public.customers (tenant_id);
ALTER TABLE public.customers ENABLE ROW LEVEL SECURITY;
CREATE POLICY customers_tenant ON public.customers FOR ALL TO authenticated
    USING (tenant_id = {_WRAPPED}) WITH CHECK (tenant_id = {_WRAPPED});

CREATE TABLE public.customer_contacts (id bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers (id), email text NOT NULL);
CREATE INDEX customer_contacts_customer_id_idx ON public.customer_contacts (customer_id);
ALTER TABLE public.customer_contacts ENABLE ROW LEVEL SECURITY;
CREATE POLICY customer_contacts_tenant ON public.customer_contacts FOR ALL TO authenticated
    USING (customer_id IN (SELECT c.id FROM public.customers c));

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO authenticated;
"""

_T = "md5('tenant:' || {n})::uuid"


def _data(s: Scale) -> str:
    t = _T.format
    return f"""
INSERT INTO public.tenants SELECT {t(n='g')}, 'Tenant ' || g FROM generate_series(1, {s.tenants}) g;
INSERT INTO auth.users (id, email) SELECT md5('user:' || g)::uuid, 'user' || g || '@example.com'
    FROM generate_series(1, {s.tenants * s.users_per_tenant}) g;
INSERT INTO public.memberships (user_id, tenant_id)
    SELECT md5('user:' || g)::uuid, {t(n=f'(g % {s.tenants} + 1)')}
    FROM generate_series(1, {s.tenants * s.users_per_tenant}) g;
INSERT INTO public.orders SELECT g, {t(n=f'(g % {s.tenants} + 1)')}, g % 1000,
    timestamptz '2025-01-01' + g * interval '1 minute' FROM generate_series(1, {s.orders}) g;
INSERT INTO public.invoices SELECT g, {t(n=f'(g % {s.tenants} + 1)')}, g % 5000,
    date '2025-01-01' + g % 365 FROM generate_series(1, {s.invoices}) g;
INSERT INTO public.projects SELECT g, {t(n=f'(g % {s.tenants} + 1)')}, 'project ' || g
    FROM generate_series(1, {s.projects}) g;
INSERT INTO public.events SELECT g, {t(n=f'(g % {s.tenants} + 1)')}, 'kind ' || g % 7,
    timestamptz '2025-01-01' + g * interval '1 second' FROM generate_series(1, {s.events}) g;
INSERT INTO public.notes SELECT g, {t(n=f'(g % {s.tenants} + 1)')}, g % 500 = 0, 'note ' || g
    FROM generate_series(1, {s.notes}) g;
INSERT INTO public.customers SELECT g, {t(n=f'(g % {s.tenants} + 1)')}, 'customer ' || g
    FROM generate_series(1, {s.customers}) g;
INSERT INTO public.customer_contacts SELECT g, g % {s.customers} + 1, 'c' || g || '@example.com'
    FROM generate_series(1, {s.customers * 3}) g;
"""


def load_planted(dsn: str, scale: Scale = TEST) -> None:
    """Load the shim, the planted schema and its rows into an empty database, then ANALYZE it."""
    shim = resources.files("dbguard_pipeline.demo").joinpath("supabase_shim.sql").read_text(encoding="utf-8")
    with connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(shim)
            conn.execute(SCHEMA)
            conn.execute(_data(scale))
        conn.execute("VACUUM ANALYZE")


def create_planted_database(server_dsn: str, dbname: str, scale: Scale = TEST) -> str:
    """(Re)create ``dbname`` on the server of ``server_dsn`` with the planted schema; returns its DSN."""
    from dbguard_pipeline.pg.dsn import with_database

    with connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = with_database(server_dsn, dbname)
    load_planted(dsn, scale)
    return dsn


def main() -> None:
    ap = argparse.ArgumentParser(description="create the planted database for dbguard analyze")
    ap.add_argument("--dsn", required=True, help="superuser URL of the server (its maintenance database)")
    ap.add_argument("--name", default="dbguard_planted")
    ap.add_argument("--scale", choices=("bench", "test"), default="test")
    args = ap.parse_args()
    dsn = create_planted_database(args.dsn, args.name, BENCH if args.scale == "bench" else TEST)
    print(dsn)


if __name__ == "__main__":
    main()
