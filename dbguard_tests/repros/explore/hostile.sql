-- hostile identifiers everywhere: schema, tables, columns, policies and the app role; GUC tenancy
do $$ begin
  if not exists (select 1 from pg_roles where rolname = 'App "User"; x') then create role "App ""User""; x" nologin; end if;
end $$;
create schema "a""b; drop table x";
grant usage on schema "a""b; drop table x" to "App ""User""; x";
set search_path = "a""b; drop table x";

create table "Orgs" ("ID" uuid primary key, "Name" text not null);
insert into "Orgs" values ('00000000-0000-0000-0000-00000000000a', 'A'), ('00000000-0000-0000-0000-00000000000b', 'B');

-- correct: the tenant pinned with the GUC
create table "select" (
    "Org Id" uuid not null references "Orgs" ("ID"),
    "from" int not null,
    "Ünïcode välue" text,
    primary key ("Org Id", "from")
);
alter table "select" enable row level security;
create policy "p""; drop table x; --" on "select" for all to "App ""User""; x"
    using ("Org Id" = (select nullif(current_setting('app.org', true), '')::uuid))
    with check ("Org Id" = (select nullif(current_setting('app.org', true), '')::uuid));

-- correct, unicode names
create table "Ünïcode tâble" (
    id int generated always as identity primary key,
    "Org Id" uuid not null references "Orgs" ("ID"),
    "naïve" text
);
create index on "Ünïcode tâble" ("Org Id");
alter table "Ünïcode tâble" enable row level security;
create policy "tenant ✓" on "Ünïcode tâble" for all to "App ""User""; x"
    using ("Org Id" = (select nullif(current_setting('app.org', true), '')::uuid))
    with check ("Org Id" = (select nullif(current_setting('app.org', true), '')::uuid));

-- PLANTED: RLS forgotten
create table "Order Lines" (
    id int generated always as identity primary key,
    "Org Id" uuid not null references "Orgs" ("ID"),
    "Qty" int not null
);
create index on "Order Lines" ("Org Id");

-- PLANTED: inserts unchecked (WITH CHECK true), a per-row current_setting, FK without index
create table "User" (
    id int generated always as identity primary key,
    "Org Id" uuid not null references "Orgs" ("ID"),
    "E-mail" text not null
);
alter table "User" enable row level security;
create policy "read ""own"" org" on "User" for select to "App ""User""; x"
    using ("Org Id" = nullif(current_setting('app.org', true), '')::uuid);
create policy "insert; anything" on "User" for insert to "App ""User""; x" with check (true);

grant select, insert, update, delete on all tables in schema "a""b; drop table x" to "App ""User""; x";
insert into "select" values ('00000000-0000-0000-0000-00000000000a', 1, 'a'), ('00000000-0000-0000-0000-00000000000b', 1, 'b');
insert into "Ünïcode tâble" ("Org Id", "naïve") values ('00000000-0000-0000-0000-00000000000a', 'a'), ('00000000-0000-0000-0000-00000000000b', 'b');
insert into "Order Lines" ("Org Id", "Qty") values ('00000000-0000-0000-0000-00000000000a', 1), ('00000000-0000-0000-0000-00000000000b', 2);
insert into "User" ("Org Id", "E-mail") values ('00000000-0000-0000-0000-00000000000a', 'a@x'), ('00000000-0000-0000-0000-00000000000b', 'b@x');
reset search_path;
