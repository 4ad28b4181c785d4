-- app-owned tables (the application's login role owns them, as a framework's migrations leave them), GUC
-- tenancy, a ledger partitioned by month with a default partition
do $$ begin
  if not exists (select 1 from pg_roles where rolname = 'ledger_app') then create role ledger_app login; end if;
end $$;
create schema ledger authorization ledger_app;
set role ledger_app;
set search_path = ledger;

create table orgs (id uuid primary key, name text not null);
insert into orgs values ('00000000-0000-0000-0000-00000000000a', 'A'), ('00000000-0000-0000-0000-00000000000b', 'B');

-- correct: RLS enabled and FORCEd (the owner is the app), tenant pinned
create table budgets (
    id int generated always as identity primary key,
    org_id uuid not null references orgs (id),
    amount numeric not null
);
create index on budgets (org_id);
alter table budgets enable row level security;
alter table budgets force row level security;
create policy budgets_org on budgets for all
    using (org_id = (select nullif(current_setting('app.org_id', true), '')::uuid))
    with check (org_id = (select nullif(current_setting('app.org_id', true), '')::uuid));

-- PLANTED: RLS enabled but not forced: the owner (the app) bypasses it
create table accounts (
    id int generated always as identity primary key,
    org_id uuid not null references orgs (id),
    code text not null
);
create index on accounts (org_id);
alter table accounts enable row level security;
create policy accounts_org on accounts for all
    using (org_id = (select nullif(current_setting('app.org_id', true), '')::uuid))
    with check (org_id = (select nullif(current_setting('app.org_id', true), '')::uuid));

-- PLANTED: partitioned by month, RLS forced on the root only; the partitions (owned by the app) are open
create table entries (
    org_id uuid not null references orgs (id),
    id bigint not null,
    booked_on date not null,
    amount numeric not null,
    primary key (org_id, id, booked_on)
) partition by range (booked_on);
create table entries_2026_01 partition of entries for values from ('2026-01-01') to ('2026-02-01');
create table entries_2026_02 partition of entries for values from ('2026-02-01') to ('2026-03-01');
create table entries_default partition of entries default;
alter table entries enable row level security;
alter table entries force row level security;
create policy entries_org on entries for all
    using (org_id = (select nullif(current_setting('app.org_id', true), '')::uuid))
    with check (org_id = (select nullif(current_setting('app.org_id', true), '')::uuid));

reset role;
-- rows written by a migration (superuser: bypasses RLS)
insert into ledger.budgets (org_id, amount) values ('00000000-0000-0000-0000-00000000000a', 1), ('00000000-0000-0000-0000-00000000000b', 2);
insert into ledger.accounts (org_id, code) values ('00000000-0000-0000-0000-00000000000a', 'a'), ('00000000-0000-0000-0000-00000000000b', 'b');
insert into ledger.entries
select o.id, g, d, g from ledger.orgs o, generate_series(1, 2) g,
    unnest(array[date '2026-01-15', date '2026-02-15', date '2027-06-01']) d;
reset search_path;
