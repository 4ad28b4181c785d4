-- tenancy in a non-public schema `app`, tenant column org_id bigint, composite primary keys (org_id, id),
-- identity ALWAYS columns, a generated column, and a SECURITY DEFINER search function granted to the app role
do $$ begin
  if not exists (select 1 from pg_roles where rolname = 'crm_app') then create role crm_app login; end if;
end $$;
create schema app;
grant usage on schema app to crm_app;
set search_path = app;

create table orgs (id bigint generated always as identity primary key, name text not null);
insert into orgs (name) values ('A'), ('B');

create table customers (
    org_id bigint not null references orgs (id),
    id bigint generated always as identity,
    email text not null,
    email_domain text generated always as (split_part(email, '@', 2)) stored,
    primary key (org_id, id)
);
alter table customers enable row level security;
create policy customers_org on customers for all to crm_app
    using (org_id = (select nullif(current_setting('app.org_id', true), '')::bigint))
    with check (org_id = (select nullif(current_setting('app.org_id', true), '')::bigint));

-- PLANTED: RLS forgotten
create table orders (
    org_id bigint not null,
    id bigint generated always as identity,
    customer_id bigint not null,
    total numeric(12, 2) not null,
    total_with_tax numeric(12, 2) generated always as (total * 1.2) stored,
    primary key (org_id, id),
    foreign key (org_id, customer_id) references customers (org_id, id)
);
create index on orders (org_id, customer_id);

-- PLANTED: SECURITY DEFINER, owned by the superuser, no tenant filter: returns every tenant's customers
create function search_customers(q text) returns setof app.customers
language sql stable security definer set search_path = '' as $$
  select * from app.customers c where c.email like '%' || q || '%'
$$;
revoke execute on function search_customers(text) from public;
grant execute on function search_customers(text) to crm_app;

grant select, insert, update, delete on orgs, customers, orders to crm_app;

insert into customers (org_id, email) values (1, 'x@a.test'), (2, 'y@b.test');
insert into orders (org_id, customer_id, total) values (1, 1, 10), (2, 2, 20);
reset search_path;
