"""`dbguard lint-migration` and the pre-commit hooks that run it: policy checks on migration files without a
database, plus squawk."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dbguard_pipeline.policy.statements import statement_problems

from .test_cli_foundation import assert_one_line_error, dbguard

ROOT = Path(__file__).resolve().parents[1]
CTX = "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"

BAD = """-- a new table and its policies
create table public.invoices (id bigint primary key, tenant_id uuid not null);

alter table public.invoices enable row level security;
create policy "read all" on public.invoices for select using (1 = 1);
create policy w on public.invoices to authenticated
  using (tenant_id = current_setting('app.current_tenant_id')::uuid);
create policy meta on public.invoices using ((auth.jwt() -> 'user_metadata' ->> 'tenant_id')::uuid = tenant_id);
alter table public.garages disable row level security;
alter table public.invoices no force row level security;
"""

GOOD = f"""create policy inv on public.invoices as permissive for all to authenticated
  using (tenant_id = {CTX}) with check (tenant_id = {CTX});
create policy deny on public.invoices as restrictive using (true);
alter policy inv on public.invoices using (tenant_id = {CTX});
"""


def test_policy_checks_find_each_planted_problem_at_its_line():
    found = {(p.line, p.rule) for p in statement_problems(BAD)}
    assert found == {
        (5, "weak_rls_policy"),
        (6, "tenant_context_cast_unsafe"),
        (6, "auth_rls_initplan"),
        (8, "auth_rls_initplan"),
        (8, "rls_references_user_metadata"),
        (9, "rls_disabled_with_tenant_column"),
        (10, "rls_not_forced"),
    }
    assert statement_problems(GOOD) == []  # a restrictive USING (true) narrows nothing, it is not weak


@pytest.mark.parametrize("spelling", ["true", "1 = 1", "'t'::boolean", "true or tenant_id is null", "not false"])
def test_always_true_in_any_spelling(spelling):
    sql = f"create policy p on t using ({spelling});"
    assert [p.rule for p in statement_problems(sql)] == ["weak_rls_policy"]
    assert [p.rule for p in statement_problems(f"alter policy p on t with check ({spelling});")] == ["weak_rls_policy"]


def test_the_command_exits_1_on_problems_0_when_clean(tmp_path):
    bad, good = tmp_path / "migrations" / "1_bad.sql", tmp_path / "migrations" / "2_good.sql"
    bad.parent.mkdir()
    bad.write_text(BAD)
    good.write_text(GOOD)
    proc = dbguard("lint-migration", "--no-squawk", str(bad), str(good))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        f'{bad}:5: critical: policy "read all" on public.invoices: USING is always true: every '
        f"session sees every tenant's rows [dbguard weak_rls_policy]"
    )
    assert len(lines) == 7 and "7 problems in 2 files (dbguard policy checks)" in proc.stderr
    assert dbguard("lint-migration", "--no-squawk", str(good)).returncode == 0
    # with squawk: its violations too, in file and line order
    both = dbguard("lint-migration", str(bad))
    assert both.returncode == 1 and "squawk " in both.stdout and "(dbguard policy checks and squawk)" in both.stderr
    numbers = [int(ln.split(":")[1]) for ln in both.stdout.splitlines()]
    assert numbers == sorted(numbers)


def test_unreadable_or_unparsable_files(tmp_path):
    assert_one_line_error(dbguard("lint-migration", str(tmp_path / "nope.sql")), "file not found")
    broken = tmp_path / "broken.sql"
    broken.write_text("create policy p on t using (;")
    proc = dbguard("lint-migration", "--no-squawk", str(broken))
    assert proc.returncode == 1 and "does not parse" in proc.stdout


def test_the_pre_commit_hooks_run_this_command():
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"dbguard-lint-migration", "dbguard-lint-policies"}
    for hook in hooks:
        assert hook["language"] == "python" and hook["types"] == ["sql"]
        assert hook["entry"].split()[:2] == ["dbguard", "lint-migration"]
        assert "[project.scripts]\ndbguard = " in (ROOT / "pyproject.toml").read_text()
