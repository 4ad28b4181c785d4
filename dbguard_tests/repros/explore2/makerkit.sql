-- makerkit-style SaaS starter (after the Supabase shim): organizations, memberships with a role enum, invitations
-- readable by the invitee's email, a SECURITY DEFINER has_role_on_organization() helper, auth.uid() policies,
-- a security_invoker view and a plain view over tenant tables
create type public.org_role as enum ('owner', 'member');

create table public.organizations (
    id uuid primary key,
    name text not null,
    primary_owner_user_id uuid not null references auth.users (id)
);
create table public.memberships (
    organization_id uuid not null references public.organizations (id) on delete cascade,
    user_id uuid not null references auth.users (id) on delete cascade,
    role public.org_role not null default 'member',
    primary key (organization_id, user_id)
);
create index on public.memberships (user_id);

create function public.has_role_on_organization(org_id uuid, org_role public.org_role default null)
returns boolean language sql stable security definer set search_path = '' as $$
  select exists (
    select 1 from public.memberships m
    where m.user_id = auth.uid() and m.organization_id = org_id
      and (org_role is null or m.role = org_role))
$$;
grant execute on function public.has_role_on_organization(uuid, public.org_role) to authenticated;

alter table public.organizations enable row level security;
create policy organizations_read on public.organizations for select to authenticated
    using (public.has_role_on_organization(id));
create policy organizations_update on public.organizations for update to authenticated
    using (public.has_role_on_organization(id, 'owner'));

alter table public.memberships enable row level security;
create policy memberships_read on public.memberships for select to authenticated
    using (user_id = (select auth.uid()) or public.has_role_on_organization(organization_id));
create policy memberships_delete on public.memberships for delete to authenticated
    using (public.has_role_on_organization(organization_id, 'owner'));

create table public.invitations (
    id uuid primary key default gen_random_uuid(),
    organization_id uuid not null references public.organizations (id) on delete cascade,
    email text not null,
    role public.org_role not null default 'member',
    invited_by uuid not null references auth.users (id)
);
create index on public.invitations (organization_id);
create index on public.invitations (invited_by);
alter table public.invitations enable row level security;
create policy invitations_read on public.invitations for select to authenticated
    using (public.has_role_on_organization(organization_id)
           or email = (select auth.jwt() ->> 'email'));
create policy invitations_manage on public.invitations for all to authenticated
    using (public.has_role_on_organization(organization_id, 'owner'))
    with check (public.has_role_on_organization(organization_id, 'owner'));

create table public.projects (
    id uuid primary key,
    organization_id uuid not null references public.organizations (id) on delete cascade,
    name text not null
);
create index on public.projects (organization_id);
alter table public.projects enable row level security;
create policy projects_read on public.projects for select to authenticated
    using (public.has_role_on_organization(organization_id));
create policy projects_write on public.projects for all to authenticated
    using (public.has_role_on_organization(organization_id))
    with check (public.has_role_on_organization(organization_id));

create table public.tasks (
    id uuid primary key default gen_random_uuid(),
    organization_id uuid not null references public.organizations (id) on delete cascade,
    project_id uuid not null references public.projects (id) on delete cascade,
    title text not null
);
create index on public.tasks (organization_id);
create index on public.tasks (project_id);
alter table public.tasks enable row level security;
create policy tasks_rw on public.tasks for all to authenticated
    using (public.has_role_on_organization(organization_id))
    with check (public.has_role_on_organization(organization_id));

-- correct: a security_invoker view runs with the caller's rights, RLS of the tables applies
create view public.project_task_counts with (security_invoker = true) as
    select p.organization_id, p.id as project_id, p.name, count(t.id) as tasks
    from public.projects p left join public.tasks t on t.project_id = p.id
    group by p.organization_id, p.id, p.name;
-- PLANTED: a plain view runs as its owner (the superuser that ran the migrations): RLS does not apply
create view public.task_list as
    select t.organization_id, t.id, t.title, p.name as project from public.tasks t join public.projects p on p.id = t.project_id;

grant select, insert, update, delete on all tables in schema public to authenticated;

insert into auth.users (id, email) values
    ('00000000-0000-0000-0000-0000000000a1', 'owner@a.test'),
    ('00000000-0000-0000-0000-0000000000a2', 'member@a.test'),
    ('00000000-0000-0000-0000-0000000000b1', 'owner@b.test');
insert into public.organizations values
    ('00000000-0000-0000-0000-00000000000a', 'A', '00000000-0000-0000-0000-0000000000a1'),
    ('00000000-0000-0000-0000-00000000000b', 'B', '00000000-0000-0000-0000-0000000000b1');
insert into public.memberships values
    ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-0000000000a1', 'owner'),
    ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-0000000000a2', 'member'),
    ('00000000-0000-0000-0000-00000000000b', '00000000-0000-0000-0000-0000000000b1', 'owner');
insert into public.invitations (organization_id, email, invited_by) values
    ('00000000-0000-0000-0000-00000000000b', 'member@a.test', '00000000-0000-0000-0000-0000000000b1');
insert into public.projects values
    ('00000000-0000-0000-0000-000000000a01', '00000000-0000-0000-0000-00000000000a', 'alpha'),
    ('00000000-0000-0000-0000-000000000b01', '00000000-0000-0000-0000-00000000000b', 'beta');
insert into public.tasks (organization_id, project_id, title) values
    ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-000000000a01', 'a task'),
    ('00000000-0000-0000-0000-00000000000b', '00000000-0000-0000-0000-000000000b01', 'b task');
