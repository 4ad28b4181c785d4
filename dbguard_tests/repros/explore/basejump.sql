-- basejump-style accounts: a personal account per user (its id is the user's id) and team accounts;
-- membership in basejump.account_user with a role; SECURITY DEFINER helpers used by every policy.
create schema basejump;
grant usage on schema basejump to authenticated;
create type basejump.account_role as enum ('owner', 'member');

create table basejump.accounts (
    id uuid primary key default gen_random_uuid(),
    primary_owner_user_id uuid not null references auth.users (id),
    name text,
    slug text unique,
    personal_account boolean not null default false,
    created_at timestamptz default now()
);
create table basejump.account_user (
    user_id uuid not null references auth.users (id) on delete cascade,
    account_id uuid not null references basejump.accounts (id) on delete cascade,
    account_role basejump.account_role not null,
    primary key (user_id, account_id)
);

create function basejump.has_role_on_account(account_id uuid, account_role basejump.account_role default null)
    returns boolean language sql security definer set search_path = public stable as $$
  select exists(
    select 1 from basejump.account_user wu
    where wu.user_id = auth.uid()
      and wu.account_id = has_role_on_account.account_id
      and (wu.account_role = has_role_on_account.account_role or has_role_on_account.account_role is null));
$$;
create function basejump.get_accounts_with_role(passed_in_role basejump.account_role default null)
    returns setof uuid language sql security definer set search_path = public as $$
  select account_id from basejump.account_user wu
  where wu.user_id = auth.uid() and (wu.account_role = passed_in_role or passed_in_role is null);
$$;
grant execute on function basejump.has_role_on_account(uuid, basejump.account_role) to authenticated;
grant execute on function basejump.get_accounts_with_role(basejump.account_role) to authenticated;

alter table basejump.accounts enable row level security;
alter table basejump.account_user enable row level security;
create policy "users can view their own account_users" on basejump.account_user for select to authenticated
    using (user_id = auth.uid());
create policy "users can view their teammates" on basejump.account_user for select to authenticated
    using (basejump.has_role_on_account(account_id) = true);
create policy "Account users can be deleted by owners except primary account owner" on basejump.account_user
    for delete to authenticated
    using ((basejump.has_role_on_account(account_id, 'owner') = true)
           and user_id != (select primary_owner_user_id from basejump.accounts where account_id = accounts.id));
create policy "Accounts are viewable by members" on basejump.accounts for select to authenticated
    using (basejump.has_role_on_account(id) = true);
create policy "Accounts are viewable by primary owner" on basejump.accounts for select to authenticated
    using (primary_owner_user_id = auth.uid());
create policy "Team accounts can be created by any user" on basejump.accounts for insert to authenticated
    with check (personal_account = false);
create policy "Accounts can be edited by owners" on basejump.accounts for update to authenticated
    using (basejump.has_role_on_account(id, 'owner') = true);
grant select, insert, update, delete on all tables in schema basejump to authenticated;

-- the app's tables
create table public.projects (
    id uuid primary key default gen_random_uuid(),
    account_id uuid not null references basejump.accounts (id),
    name text not null
);
create index on public.projects (account_id);
alter table public.projects enable row level security;
create policy "members read projects" on public.projects for select to authenticated
    using (account_id in (select basejump.get_accounts_with_role()));
create policy "members add projects" on public.projects for insert to authenticated
    with check (basejump.has_role_on_account(account_id));
create policy "owners edit projects" on public.projects for update to authenticated
    using (basejump.has_role_on_account(account_id, 'owner'))
    with check (basejump.has_role_on_account(account_id, 'owner'));
create policy "owners delete projects" on public.projects for delete to authenticated
    using (basejump.has_role_on_account(account_id, 'owner'));

-- personal data: the personal account's id is the user's id (basejump's convention)
create table public.user_notes (
    id bigint generated always as identity primary key,
    account_id uuid not null references basejump.accounts (id),
    body text not null
);
create index on public.user_notes (account_id);
alter table public.user_notes enable row level security;
create policy "own notes" on public.user_notes for all to authenticated
    using (account_id = (select auth.uid())) with check (account_id = (select auth.uid()));

-- PLANTED: the membership subquery forgot to filter on the user: every signed-in user reads every invoice
create table public.invoices (
    id bigint generated always as identity primary key,
    account_id uuid not null references basejump.accounts (id),
    amount_cents int not null
);
create index on public.invoices (account_id);
alter table public.invoices enable row level security;
create policy "members read invoices" on public.invoices for select to authenticated
    using (account_id in (select au.account_id from basejump.account_user au));
create policy "owners write invoices" on public.invoices for insert to authenticated
    with check (basejump.has_role_on_account(account_id, 'owner'));

-- PLANTED: RLS forgotten on a table of the account
create table public.project_files (
    id bigint generated always as identity primary key,
    account_id uuid not null references basejump.accounts (id),
    project_id uuid not null references public.projects (id),
    path text not null
);
create index on public.project_files (account_id);
create index on public.project_files (project_id);
grant select, insert, update, delete on all tables in schema public to authenticated;

-- data: users a1 (team A owner), a2 (team A member), b1 (team B owner); personal accounts carry the user's id
insert into auth.users (id, email) values
  ('00000000-0000-0000-0000-0000000000a1', 'a@example.com'),
  ('00000000-0000-0000-0000-0000000000b1', 'b@example.com'),
  ('00000000-0000-0000-0000-0000000000a2', 'a2@example.com');
insert into basejump.accounts (id, primary_owner_user_id, name, slug, personal_account) values
  ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000a1', 'a', null, true),
  ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000b1', 'b', null, true),
  ('00000000-0000-0000-0000-0000000000a2', '00000000-0000-0000-0000-0000000000a2', 'a2', null, true),
  ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-0000000000a1', 'Team A', 'team-a', false),
  ('00000000-0000-0000-0000-00000000000b', '00000000-0000-0000-0000-0000000000b1', 'Team B', 'team-b', false);
insert into basejump.account_user values
  ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000a1', 'owner'),
  ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-0000000000b1', 'owner'),
  ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-00000000000a', 'owner'),
  ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-00000000000b', 'owner'),
  ('00000000-0000-0000-0000-0000000000a2', '00000000-0000-0000-0000-0000000000a2', 'owner'),
  ('00000000-0000-0000-0000-0000000000a2', '00000000-0000-0000-0000-00000000000a', 'member');
insert into public.projects (id, account_id, name) values
  ('00000000-0000-0000-0000-000000000a01', '00000000-0000-0000-0000-00000000000a', 'pa'),
  ('00000000-0000-0000-0000-000000000b01', '00000000-0000-0000-0000-00000000000b', 'pb');
insert into public.user_notes (account_id, body) values
  ('00000000-0000-0000-0000-0000000000a1', 'note a'), ('00000000-0000-0000-0000-0000000000b1', 'note b');
insert into public.invoices (account_id, amount_cents) values
  ('00000000-0000-0000-0000-00000000000a', 100), ('00000000-0000-0000-0000-00000000000b', 200);
insert into public.project_files (account_id, project_id, path) values
  ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-000000000a01', '/a'),
  ('00000000-0000-0000-0000-00000000000b', '00000000-0000-0000-0000-000000000b01', '/b');
