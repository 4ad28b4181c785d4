-- RESTRICTIVE policies combined with permissive ones; policies TO a group role the app's login role inherits
do $$ begin
  if not exists (select 1 from pg_roles where rolname = 'web_users') then create role web_users nologin; end if;
  if not exists (select 1 from pg_roles where rolname = 'support_staff') then create role support_staff nologin; end if;
  if not exists (select 1 from pg_roles where rolname = 'web_login') then create role web_login login inherit; end if;
end $$;
grant web_users to web_login;
create schema saas;
grant usage on schema saas to web_users;
set search_path = saas;

create table tenants (id uuid primary key, name text not null);
insert into tenants values ('00000000-0000-0000-0000-00000000000a', 'A'), ('00000000-0000-0000-0000-00000000000b', 'B');

-- correct: permissive "true" for the group, a RESTRICTIVE tenant pin for the group (AND-ed)
create table documents (
    id int primary key, tenant_id uuid not null references tenants (id), title text not null);
create index on documents (tenant_id);
alter table documents enable row level security;
create policy documents_open on documents for all to web_users using (true) with check (true);
create policy documents_tenant on documents as restrictive for all to web_users
    using (tenant_id = (select nullif(current_setting('app.tenant', true), '')::uuid))
    with check (tenant_id = (select nullif(current_setting('app.tenant', true), '')::uuid));

-- correct: permissive tenant pin, RESTRICTIVE soft-delete filter
create table comments (
    id int primary key, tenant_id uuid not null references tenants (id), body text, deleted boolean not null default false);
create index on comments (tenant_id);
alter table comments enable row level security;
create policy comments_tenant on comments for all to web_users
    using (tenant_id = (select nullif(current_setting('app.tenant', true), '')::uuid))
    with check (tenant_id = (select nullif(current_setting('app.tenant', true), '')::uuid));
create policy comments_live on comments as restrictive for select to web_users using (not deleted);

-- PLANTED: the RESTRICTIVE tenant pin is TO support_staff only; the app's group gets the open permissive policy
create table attachments (
    id int primary key, tenant_id uuid not null references tenants (id), path text not null);
create index on attachments (tenant_id);
alter table attachments enable row level security;
create policy attachments_open on attachments for select to web_users, support_staff using (true);
create policy attachments_tenant on attachments as restrictive for all to support_staff
    using (tenant_id = (select nullif(current_setting('app.tenant', true), '')::uuid));

-- PLANTED: a permissive tenant pin for the group, but a second permissive policy TO PUBLIC opens it again
create table notes (
    id int primary key, tenant_id uuid not null references tenants (id), body text);
create index on notes (tenant_id);
alter table notes enable row level security;
create policy notes_tenant on notes for all to web_users
    using (tenant_id = (select nullif(current_setting('app.tenant', true), '')::uuid))
    with check (tenant_id = (select nullif(current_setting('app.tenant', true), '')::uuid));
create policy notes_public_read on notes for select using (true);

grant select, insert, update, delete on all tables in schema saas to web_users;

insert into documents values (1, '00000000-0000-0000-0000-00000000000a', 'a'), (2, '00000000-0000-0000-0000-00000000000b', 'b');
insert into comments values (1, '00000000-0000-0000-0000-00000000000a', 'a', false), (2, '00000000-0000-0000-0000-00000000000b', 'b', false);
insert into attachments values (1, '00000000-0000-0000-0000-00000000000a', '/a'), (2, '00000000-0000-0000-0000-00000000000b', '/b');
insert into notes values (1, '00000000-0000-0000-0000-00000000000a', 'a'), (2, '00000000-0000-0000-0000-00000000000b', 'b');
reset search_path;
