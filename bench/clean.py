"""A small multi-tenant database with nothing to report (RLS on, the tenant pinned for reads and writes): the
clean members of the fleet benchmark and of the fleet tests."""

from __future__ import annotations


def clean_tenant_sql(invoices_per_tenant: int = 5) -> str:
    return f"""
CREATE TABLE public.tenants (id uuid PRIMARY KEY, name text NOT NULL);
ALTER TABLE public.tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenants_read_own ON public.tenants FOR SELECT TO public
    USING (id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid));
CREATE TABLE public.invoices (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id),
    amount numeric NOT NULL
);
CREATE INDEX invoices_tenant_id_idx ON public.invoices (tenant_id);
ALTER TABLE public.invoices ENABLE ROW LEVEL SECURITY;
CREATE POLICY invoices_tenant_isolation ON public.invoices FOR ALL TO public
    USING (tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid));
INSERT INTO public.tenants VALUES ('00000000-0000-0000-0000-00000000000a', 'a'),
    ('00000000-0000-0000-0000-00000000000b', 'b');
INSERT INTO public.invoices (tenant_id, amount)
    SELECT t.id, g FROM public.tenants t, generate_series(1, {int(invoices_per_tenant)}) g;
"""
