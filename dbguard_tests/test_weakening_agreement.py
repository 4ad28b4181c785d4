"""`dbguard diff` and the nightly `no_policy_weakened` check judge every policy and RLS change alike.

Each case changes a fresh copy of the demo database; both sides are introspected from the real server, then
judged twice: by `diff_snapshots` and by the `rls_audit` asset's own step (`rls_audit_step`, run once on the
"before" snapshot to record its metadata, once on the "after" snapshot against it, as two nightly runs do).
The check's `weakened` and `other_changes` lists must hold exactly the diff's policy and RLS changes, with the
same reasons; and each case pins what PostgreSQL's semantics say (a RESTRICTIVE policy that grows narrows
access, a PERMISSIVE one that grows widens it, removing a permissive policy narrows access).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pytest

from dbguard_pipeline.config import Config
from dbguard_pipeline.defs.audit_steps import Previous, rls_audit_step
from dbguard_pipeline.defs.resources import Target
from dbguard_pipeline.diff import Change, diff_snapshots
from dbguard_pipeline.pg.catalog import introspect

from .conftest import run_sql

TENANT = "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"
PINNED = f"tenant_id = {TENANT}"
GUARD = f"create policy tenant_guard on public.vehicles as restrictive for all using ({PINNED});"
VA = "public.vision_accuracy"
VA_POLICY = "vision_accuracy_tenant_isolation"


def _fix_profiles(dsn: str, tmp: Path) -> None:
    """dbguard's own fix: drop the open permissive policy, create the tenant policy (a real migration)."""
    from dbguard_pipeline.fixes.ledger import Runner

    from .migrations_helpers import plan, write

    write(plan(dsn, "fix-rls-policy", "profiles"), tmp / "migrations")
    Runner(dsn, tmp / "migrations").up()


Step = Union[str, Callable[[str, Path], None]]


@dataclass(frozen=True)
class Case:
    id: str
    change: Step  # applied to the "after" copy only
    weaker: dict[str, Optional[str]]  # "table[:policy]" -> a reason it must give, None: judged not weaker
    setup: Step = ""  # applied before the "before" snapshot


CASES = [
    # ---------------------------------------------------------------- permissive policies
    Case(
        "permissive added, sound",
        f"create policy va_read on {VA} for select to authenticated using ({PINNED});",
        {f"{VA}:va_read": None},
    ),
    Case(
        "permissive added, open",
        f"create policy va_open on {VA} for select to authenticated using (true);",
        {f"{VA}:va_open": "now flagged weak_rls_policy"},
    ),
    Case("permissive removed, sound", f"drop policy {VA_POLICY} on {VA};", {f"{VA}:{VA_POLICY}": None}),
    Case(
        "permissive removed, flagged (what fix-rls-policy drops)",
        'drop policy "Enable read access for all users" on public.profiles;',
        {"public.profiles:Enable read access for all users": None},
    ),
    Case(
        "permissive roles grown",
        f"alter policy {VA_POLICY} on {VA} to authenticated, anon;",
        {f"{VA}:{VA_POLICY}": "now applies to anon"},
    ),
    Case(
        "permissive roles grown by a role that bypasses RLS",
        f"alter policy {VA_POLICY} on {VA} to authenticated, service_role;",
        {f"{VA}:{VA_POLICY}": None},
    ),
    Case(
        "permissive roles shrunk",
        f"alter policy {VA_POLICY} on {VA} to authenticated;",
        {f"{VA}:{VA_POLICY}": None},
        setup=f"alter policy {VA_POLICY} on {VA} to authenticated, anon;",
    ),
    Case(
        "permissive commands grown",
        f"drop policy va_read on {VA}; create policy va_read on {VA} for all to authenticated using ({PINNED});",
        {f"{VA}:va_read": "now allows INSERT, UPDATE, DELETE (was SELECT)"},
        setup=f"create policy va_read on {VA} for select to authenticated using ({PINNED});",
    ),
    Case(
        "permissive commands shrunk",
        f"drop policy {VA_POLICY} on {VA}; create policy {VA_POLICY} on {VA} for select to authenticated "
        f"using ({PINNED});",
        {f"{VA}:{VA_POLICY}": None},
    ),
    Case(
        "permissive USING opened",
        f"alter policy {VA_POLICY} on {VA} using (true);",
        {f"{VA}:{VA_POLICY}": "USING no longer pins the tenant: it is always true"},
    ),
    Case(
        "permissive USING tightened",
        f'alter policy "Enable read access for all users" on public.vehicles using ({PINNED});',
        {"public.vehicles:Enable read access for all users": None},
    ),
    Case(
        "permissive WITH CHECK opened",
        f"alter policy {VA_POLICY} on {VA} with check (true);",
        {f"{VA}:{VA_POLICY}": "WITH CHECK no longer pins the tenant: it is always true"},
    ),
    Case(
        "permissive made RESTRICTIVE",
        f"drop policy {VA_POLICY} on {VA}; create policy {VA_POLICY} on {VA} as restrictive for all to "
        f"authenticated using ({PINNED}) with check ({PINNED});",
        {f"{VA}:{VA_POLICY}": None},
    ),
    # ---------------------------------------------------------------- restrictive policies
    Case("restrictive added", GUARD, {"public.vehicles:tenant_guard": None}),
    Case(
        "restrictive removed",
        "drop policy tenant_guard on public.vehicles;",
        {"public.vehicles:tenant_guard": "RESTRICTIVE policy removed"},
        setup=GUARD,
    ),
    Case(
        "restrictive made PERMISSIVE",
        f"drop policy tenant_guard on public.vehicles; create policy tenant_guard on public.vehicles for all "
        f"using ({PINNED});",
        {"public.vehicles:tenant_guard": "made PERMISSIVE (was RESTRICTIVE)"},
        setup=GUARD,
    ),
    Case(
        "restrictive roles grown",
        "alter policy tenant_guard on public.vehicles to authenticated, anon;",
        {"public.vehicles:tenant_guard": None},
        setup=GUARD + " alter policy tenant_guard on public.vehicles to authenticated;",
    ),
    Case(
        "restrictive roles shrunk",
        "alter policy tenant_guard on public.vehicles to authenticated;",
        {"public.vehicles:tenant_guard": "RESTRICTIVE policy no longer applies to PUBLIC"},
        setup=GUARD,
    ),
    Case(
        "restrictive commands grown",
        f"drop policy tenant_guard on public.vehicles; {GUARD}",
        {"public.vehicles:tenant_guard": None},
        setup=f"create policy tenant_guard on public.vehicles as restrictive for select using ({PINNED});",
    ),
    Case(
        "restrictive commands shrunk",
        "drop policy tenant_guard on public.vehicles; create policy tenant_guard on public.vehicles as restrictive "
        f"for select using ({PINNED});",
        {"public.vehicles:tenant_guard": "RESTRICTIVE policy narrowed from ALL to SELECT"},
        setup=GUARD,
    ),
    Case(
        "restrictive USING opened",
        "alter policy tenant_guard on public.vehicles using (true);",
        {"public.vehicles:tenant_guard": "USING no longer pins the tenant: it is always true"},
        setup=GUARD,
    ),
    Case(
        "restrictive USING tightened",
        f"alter policy tenant_guard on public.vehicles using ({PINNED});",
        {"public.vehicles:tenant_guard": None},
        setup="create policy tenant_guard on public.vehicles as restrictive for all using (true);",
    ),
    # ---------------------------------------------------------------- row level security
    Case("RLS disabled", f"alter table {VA} disable row level security;", {VA: "row level security disabled"}),
    Case(
        "RLS no longer forced",
        f"alter table {VA} no force row level security;",
        {VA: "row level security no longer forced"},
        setup=f"alter table {VA} force row level security;",
    ),
    Case("RLS enabled", "alter table public.garages enable row level security;", {"public.garages": None}),
    # ---------------------------------------------------------------- the other tests' cases, as they are
    Case(
        "test_diff: weakening",
        f"alter policy {VA_POLICY} on {VA} using (true) with check (true);",
        {f"{VA}:{VA_POLICY}": "now flagged missing_with_check"},
    ),
    Case(
        "test_diff: removals and role changes",
        """
        drop policy tenant_guard on public.vehicles;
        drop policy "Enable read access for all users" on public.profiles;
        alter policy guard_all on public.vehicle_images to authenticated;
        alter policy vision_metrics_tenant_isolation on public.vision_metrics to authenticated, anon;""",
        {
            "public.vehicles:tenant_guard": "RESTRICTIVE policy removed",
            "public.profiles:Enable read access for all users": None,
            "public.vehicle_images:guard_all": "RESTRICTIVE policy no longer applies to PUBLIC",
            "public.vision_metrics:vision_metrics_tenant_isolation": "now applies to anon",
        },
        setup=GUARD + f" create policy guard_all on public.vehicle_images as restrictive for all using ({PINNED});",
    ),
    Case(
        "test_dagster_audit: regression",
        """
        drop policy vision_metrics_tenant_isolation on public.vision_metrics;
        alter policy vision_accuracy_tenant_isolation on public.vision_accuracy to authenticated, anon;
        alter table public.conversations disable row level security;""",
        {
            "public.vision_metrics:vision_metrics_tenant_isolation": None,
            f"{VA}:{VA_POLICY}": "now applies to anon",
            "public.conversations": "row level security disabled",
        },
    ),
    Case(
        "test_diff: hostile policy name",
        'alter policy "line\nbreak" on public.vision_metrics using (true);',
        {"public.vision_metrics:line\nbreak": "USING no longer pins the tenant: it is always true"},
        setup=f'create policy "line\nbreak" on public.vision_metrics for select to authenticated using ({PINNED});',
    ),
    Case(
        "fix-rls-policy migration",
        _fix_profiles,
        {"public.profiles:Enable read access for all users": None},  # rewritten in place (issue #11)
    ),
]


def _apply(step: Step, dsn: str, tmp: Path) -> None:
    if callable(step):
        step(dsn, tmp)
    elif step.strip():
        run_sql(dsn, step)


def _key(c: Change) -> str:
    return f"{c.schema}.{c.name}" + (f":{c.item}" if c.item_type == "policy" else "")


def _nightly_line(c: Change) -> str:
    """The line the check writes for a change the diff reports (its wording, the diff's judgment)."""
    table = f"{c.schema}.{c.name}"
    if c.item_type == "rls":
        return f"{table}: {'; '.join(c.reasons)}"
    line = f"{table}: policy {c.item!r} {c.change}"
    return line + (": " + "; ".join(c.reasons) if c.reasons else "") + (f" ({c.note})" if c.note else "")


@pytest.mark.security
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nightly_check_and_diff_agree(case: Case, demo_dsn, tmp_path):
    config = Config()
    _apply(case.setup, demo_dsn, tmp_path)
    before = introspect(demo_dsn)
    _apply(case.change, demo_dsn, tmp_path)
    after = introspect(demo_dsn)

    # dbguard diff
    d = diff_snapshots(before, after, config)
    judged = [c for c in d.changes if c.object_type == "table" and c.item_type in ("policy", "rls")]
    weaker = {_key(c): c for c in judged if c.weaker}
    for key, reason in case.weaker.items():
        found = [c for c in judged if _key(c) == key]
        assert found, (key, [_key(c) for c in judged])
        if reason is None:
            assert not any(c.weaker for c in found), [c.reasons for c in found]
        else:
            assert any(reason in r for c in found for r in c.reasons), [c.reasons for c in found]

    # the nightly asset check: the rls_audit step of two runs, the second against the first's metadata
    target = Target(name="agreement", config=config)
    first = rls_audit_step(target, before, None)
    previous = Previous({k: v.value for k, v in first.metadata.items()}, run_id="0123456789abcdef")
    second = rls_audit_step(target, after, previous)
    (check,) = [c for c in second.checks if c.name == "no_policy_weakened"]

    assert check.passed is not bool(weaker), check.description
    assert sorted(check.metadata["weakened"].value) == sorted(_nightly_line(c) for c in weaker.values())
    assert sorted(check.metadata["other_changes"].value) == sorted(
        _nightly_line(c) for c in judged if c.item_type == "policy" and not c.weaker
    )
