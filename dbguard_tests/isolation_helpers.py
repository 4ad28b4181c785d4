"""Databases for the isolation probe tests: one table per policy style (GUC and Supabase JWT tenancy),
hostile identifiers, and a fingerprint of a database's contents to prove the probe leaves no trace."""

from __future__ import annotations

import contextlib
import os
import uuid
from importlib import resources

import psycopg
from psycopg import sql

from dbguard_pipeline.pg.dsn import with_database
from dbguard_pipeline.pg.session import connect

APP = "dbguard_test_app"
BYPASS = "dbguard_test_bypass"
LOGIN = "dbguard_test_login"
TENANT_A = "00000000-0000-0000-0000-00000000000a"
TENANT_B = "00000000-0000-0000-0000-00000000000b"
TENANT_C = "00000000-0000-0000-0000-00000000000c"
USER_BOTH = "00000000-0000-0000-0000-0000000000f1"  # member of A and B
USER_A = "00000000-0000-0000-0000-0000000000f2"  # member of A only: the one the probe must pick
USER_B = "00000000-0000-0000-0000-0000000000f3"

ROLES_SQL = f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP}') THEN CREATE ROLE {APP} NOLOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{BYPASS}') THEN CREATE ROLE {BYPASS} NOLOGIN BYPASSRLS; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{LOGIN}') THEN CREATE ROLE {LOGIN} LOGIN; END IF;
END
$$;
GRANT {APP} TO {LOGIN};
"""

TENANTS_SQL = f"""
CREATE TABLE public.tenants (id uuid PRIMARY KEY, name text NOT NULL);
INSERT INTO public.tenants VALUES ('{TENANT_A}', 'A'), ('{TENANT_B}', 'B'), ('{TENANT_C}', 'C');
"""


def _table(name: str, *, serial: bool = False) -> str:
    ident = "bigserial" if serial else "bigint GENERATED ALWAYS AS IDENTITY"
    return f"""
CREATE TABLE public.{name} (id {ident} PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants (id),
                            body text NOT NULL CHECK (length(body) > 0));
INSERT INTO public.{name} (tenant_id, body) SELECT t.id, t.name || ' row ' || g FROM public.tenants t, generate_series(1, 2) g;
"""


CTX = "(SELECT public.ctx())"

# GUC tenancy (app.current_tenant_id), application role dbguard_test_app: one table per policy style.
GUC_STYLES_SQL = (
    ROLES_SQL
    + TENANTS_SQL
    + """
CREATE FUNCTION public.ctx() RETURNS uuid LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid $$;
-- a helper the policy trusts, which never looks at the tenant context
CREATE FUNCTION public.tenant_ok(t uuid) RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT t IS NOT NULL $$;
"""
    + _table("rls_off", serial=True)
    + _table("using_true")
    + _table("check_missing")
    + _table("function_ignores_tenant")
    + _table("safe_guc")
    + _table("blind_only")
    + _table("owned_by_app")
    + f"""
ALTER TABLE public.using_true ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.using_true FOR ALL TO {APP} USING (true) WITH CHECK (true);

ALTER TABLE public.check_missing ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.check_missing FOR ALL TO {APP} USING (tenant_id = {CTX}) WITH CHECK (true);

ALTER TABLE public.function_ignores_tenant ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.function_ignores_tenant FOR ALL TO {APP}
    USING (public.tenant_ok(tenant_id)) WITH CHECK (public.tenant_ok(tenant_id));

ALTER TABLE public.safe_guc ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.safe_guc FOR ALL TO {APP} USING (tenant_id = {CTX}) WITH CHECK (tenant_id = {CTX});

-- reads are right; UPDATE and DELETE trust USING (true): only the blind shapes (no WHERE, so no SELECT
-- policy is applied) reach tenant B's rows
ALTER TABLE public.blind_only ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON public.blind_only FOR SELECT TO {APP} USING (tenant_id = {CTX});
CREATE POLICY i ON public.blind_only FOR INSERT TO {APP} WITH CHECK (tenant_id = {CTX});
CREATE POLICY u ON public.blind_only FOR UPDATE TO {APP} USING (true) WITH CHECK (tenant_id = {CTX});
CREATE POLICY d ON public.blind_only FOR DELETE TO {APP} USING (true);

-- a correct policy, but the application role owns the table and RLS is not forced
ALTER TABLE public.owned_by_app ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.owned_by_app FOR ALL TO {APP} USING (tenant_id = {CTX}) WITH CHECK (tenant_id = {CTX});
ALTER TABLE public.owned_by_app OWNER TO {APP};

-- tables without a tenant column that reach one through a foreign key
CREATE TABLE public.child_ok (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id bigint NOT NULL REFERENCES public.safe_guc (id) ON DELETE CASCADE, note text NOT NULL);
INSERT INTO public.child_ok (parent_id, note) SELECT id, 'note ' || id FROM public.safe_guc;
ALTER TABLE public.child_ok ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.child_ok FOR ALL TO {APP}
    USING (EXISTS (SELECT 1 FROM public.safe_guc s WHERE s.id = parent_id))
    WITH CHECK (EXISTS (SELECT 1 FROM public.safe_guc s WHERE s.id = parent_id));
CREATE TABLE public.child_leak (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id bigint NOT NULL REFERENCES public.safe_guc (id) ON DELETE CASCADE, note text NOT NULL);
INSERT INTO public.child_leak (parent_id, note) SELECT id, 'note ' || id FROM public.safe_guc;

-- a view that runs with its owner's (a superuser's) rights over the correct table, and one that does not
CREATE VIEW public.owner_view AS SELECT id, tenant_id, body FROM public.safe_guc;
CREATE VIEW public.invoker_view WITH (security_invoker = true) AS SELECT id, tenant_id, body FROM public.safe_guc;

GRANT USAGE ON SCHEMA public TO {APP};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP};
"""
)


def supabase_shim() -> str:
    return resources.files("dbguard_pipeline.demo").joinpath("supabase_shim.sql").read_text(encoding="utf-8")


JWT = "((SELECT auth.jwt()) ->> 'tenant_id')::uuid"
MEMBER = "(SELECT m.tenant_id FROM public.memberships m WHERE m.user_id = (SELECT auth.uid()))"

# Supabase JWT tenancy: request.jwt.claims, role authenticated, a membership table.
JWT_STYLES_SQL = (
    TENANTS_SQL
    + f"""
INSERT INTO auth.users (id, email) VALUES ('{USER_BOTH}', 'both@example.com'), ('{USER_A}', 'a@example.com'),
    ('{USER_B}', 'b@example.com');
CREATE TABLE public.memberships (user_id uuid NOT NULL REFERENCES auth.users (id),
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), PRIMARY KEY (user_id, tenant_id));
INSERT INTO public.memberships VALUES ('{USER_BOTH}', '{TENANT_A}'), ('{USER_BOTH}', '{TENANT_B}'),
    ('{USER_A}', '{TENANT_A}'), ('{USER_B}', '{TENANT_B}');
ALTER TABLE public.memberships ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON public.memberships FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
"""
    + _table("jwt_ok")
    + _table("member_ok")
    + _table("any_user")
    + f"""
ALTER TABLE public.jwt_ok ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.jwt_ok FOR ALL TO authenticated USING (tenant_id = {JWT}) WITH CHECK (tenant_id = {JWT});
ALTER TABLE public.member_ok ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.member_ok FOR ALL TO authenticated
    USING (tenant_id IN {MEMBER}) WITH CHECK (tenant_id IN {MEMBER});
-- "signed in" is not "in this tenant"
ALTER TABLE public.any_user ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.any_user FOR ALL TO authenticated
    USING ((SELECT auth.uid()) IS NOT NULL) WITH CHECK ((SELECT auth.uid()) IS NOT NULL);
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO authenticated;
"""
)

# Hostile identifiers everywhere, including the tenant model itself.
H_SCHEMA = 'Sch"ema; DROP TABLE public.x --'
H_TENANTS = "Mandanten ü"
H_KEY = "Schlüssel"
H_COL = 'Mandant"ID'
H_RLS_OFF = 'Fahrzeüge "Größe"'
H_SAFE = "S" + "x" * 61 + "E"  # 63 characters, the longest name PostgreSQL keeps
H_CHILD = "Kind'; --\nzwei"  # a newline in a name: text and XML output must stay well-formed


def hostile_sql() -> sql.Composable:
    s, i = H_SCHEMA, sql.Identifier
    col, key = i(H_COL), i(H_KEY)
    ctx = sql.SQL("nullif(current_setting('app.tenant', true), '')::uuid")
    parts = [
        sql.SQL(ROLES_SQL),
        sql.SQL("CREATE SCHEMA {}").format(i(s)),
        sql.SQL("CREATE TABLE {} ({} uuid PRIMARY KEY, {} text NOT NULL)").format(i(s, H_TENANTS), key, i("Name")),
        sql.SQL("INSERT INTO {} VALUES ({}, 'A'), ({}, 'B')").format(
            i(s, H_TENANTS), sql.Literal(TENANT_A), sql.Literal(TENANT_B)
        ),
    ]
    for name in (H_RLS_OFF, H_SAFE):
        parts += [
            sql.SQL(
                "CREATE TABLE {} ({} serial PRIMARY KEY, {} uuid NOT NULL REFERENCES {} ({}), {} text NOT NULL)"
            ).format(i(s, name), i("ID"), col, i(s, H_TENANTS), key, i("Body Text")),
            sql.SQL("INSERT INTO {} ({}, {}) SELECT {}, 'row ' || g FROM {}, generate_series(1, 2) g").format(
                i(s, name), col, i("Body Text"), key, i(s, H_TENANTS)
            ),
        ]
    parts += [
        sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(i(s, H_SAFE)),
        sql.SQL("CREATE POLICY {} ON {} FOR ALL TO {} USING ({} = {}) WITH CHECK ({} = {})").format(
            i('iso"; --'), i(s, H_SAFE), i(APP), col, ctx, col, ctx
        ),
        sql.SQL(
            "CREATE TABLE {} ({} int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {} int NOT NULL REFERENCES {} ({}))"
        ).format(i(s, H_CHILD), i("Id"), i("Eltern"), i(s, H_RLS_OFF), i("ID")),
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(i(s, H_CHILD), i("Eltern"), i("ID"), i(s, H_RLS_OFF)),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(i(s), i(APP)),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(i(s), i(APP)),
    ]
    return sql.SQL(";\n").join(parts)


@contextlib.contextmanager
def scratch_database(server_dsn: str, *statements):
    """A database that lives for a module (the probe leaves no trace, so tests can share it)."""
    name = f"iso_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_database(server_dsn, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt)
        yield dsn
    finally:
        with connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def fingerprint(dsn: str) -> dict:
    """Row count and checksum of every table, every sequence's state, and the relation and role counts."""
    out: dict = {}
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')"
            " and n.nspname not like 'pg_toast%' order by 1, 2"
        ).fetchall()
        for schema, name in tables:
            out[("table", schema, name)] = conn.execute(
                sql.SQL(
                    "select count(*), md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from {} t"
                ).format(sql.Identifier(schema, name))
            ).fetchone()
        for schema, name, last, _called in conn.execute(
            "select n.nspname, c.relname, pg_sequence_last_value(c.oid), s.seqstart from pg_class c"
            " join pg_namespace n on n.oid = c.relnamespace join pg_sequence s on s.seqrelid = c.oid"
            " where c.relkind = 'S'"
        ).fetchall():
            state = conn.execute(
                sql.SQL("select last_value, is_called from {}").format(sql.Identifier(schema, name))
            ).fetchone()
            out[("sequence", schema, name)] = (last, state)
        out["relations"] = conn.execute("select count(*) from pg_class").fetchone()[0]
        out["roles"] = conn.execute("select count(*) from pg_roles").fetchone()[0]
        out["policies"] = conn.execute("select count(*) from pg_policy").fetchone()[0]
    return out
