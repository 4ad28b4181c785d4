"""The fix loop never makes things worse (issue #11): generate --all -> migrate up -> audit and probe again, on
the reproductions of shared/repros/fixes (a brewery co-op) and fixes-membership (farms with membership
tenancy), copied to dbguard_tests/repros/. After the loop: no finding that was not there before, no new
probe leak, tenant A's own rows and commands exactly as before (under the context the app sends, and with a
JWT carrying only ``sub``), and a second generate --all writes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from dbguard_pipeline import services
from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.fixes.verdicts import Access, audit_keys, compare_access, own_access
from dbguard_pipeline.probe.run import plan_targets

from .conftest import run_sql

REPROS = Path(__file__).parent / "repros"  # copies of ../shared/repros/, byte for byte


def repro_file(prefix: str, name: str) -> Path:
    """A reproduction: ``brewery`` = shared/repros/fixes/, ``farms`` = shared/repros/fixes-membership/."""
    return REPROS / ("fixes" if prefix == "brewery" else "fixes-membership") / f"{name}.sql"


BREWERY = Config(
    tenant=TenantModel(
        column="tenant_id", tenants_table="public.tenants", context="guc", guc="brew.tenant", app_role="brew_app"
    )
)
BREWERY_JWT_NESTED = Config(
    tenant=TenantModel(
        column="tenant_id",
        tenants_table="public.tenants",
        context="jwt",
        jwt_claim="app_metadata.brewery",
        app_role="brew_web",
    )
)
BREWERY_JWT = Config(
    tenant=TenantModel(column="tenant_id", tenants_table="public.tenants", context="jwt", app_role="brew_web")
)
FARMS = Config(
    tenant=TenantModel(
        column="farm_id", tenants_table="public.farms", context="jwt", jwt_claim="tenant_id", app_role="authenticated"
    ),
    schemas=("public",),
)


@dataclass
class Loop:
    dsn: str
    out: Path
    keys: tuple[set[str], set[str]] = (set(), set())
    leaks: tuple[set[str], set[str]] = (set(), set())
    lost: list[str] = field(default_factory=list)
    widened: list[str] = field(default_factory=list)
    first: services.GeneratedFixes | None = None
    second: services.GeneratedFixes | None = None

    @property
    def new_findings(self) -> set[str]:
        return self.keys[1] - self.keys[0]

    @property
    def new_leaks(self) -> set[str]:
        return self.leaks[1] - self.leaks[0]


def _measure(dsn: str, config: Config) -> tuple[set[str], set[str], dict[str, dict[str, Access]]]:
    snap = services.introspect(dsn, config)
    report = services.probe(dsn, config, snapshot=snap)
    access = {
        t.qualified: own_access(dsn, config, snap, t.qualified)[0]
        for t in plan_targets(snap, config)
        if t.kind == "table"
    }
    return audit_keys(snap, config), {f"{r.qualified} {r.probe}" for r in report.leaks}, access


def run_loop(
    databases, tmp_path: Path, prefix: str, name: str | None, config: Config, extra_sql: str | None = None
) -> Loop:
    dsn = databases.create()
    run_sql(dsn, repro_file(prefix, "common").read_text())
    if name:
        run_sql(dsn, repro_file(prefix, name).read_text())
    if extra_sql:
        run_sql(dsn, extra_sql)
    loop = Loop(dsn, tmp_path / "m")
    k0, l0, a0 = _measure(dsn, config)
    # a partition with RLS off lets the app do through it whatever it likes (a leak, probed as such); what the
    # app may do with its own rows there is what its partitioned table allows, and that is what must survive
    snap0 = services.introspect(dsn, config)
    open_parts = {t.qualified: t.parent for t in snap0.tables if t.kind == "partition" and not t.rls_enabled}
    loop.first = services.generate_fixes(
        dsn, config, out_dir=str(loop.out), round_trip="yes", timestamp="20260101000000"
    )
    if loop.out.is_dir():  # (an absent folder is the runner's business: another part of issue #11)
        services.migrator(dsn, loop.out).up()
    k1, l1, a1 = _measure(dsn, config)
    loop.keys, loop.leaks = (k0, k1), (l0, l1)
    for table, before in a0.items():
        root = open_parts.get(table)
        if root is not None and root in a0:
            before = a0[root]
        lost, widened = compare_access(before, a1.get(table, {}))
        loop.lost += [f"{table}: {x}" for x in lost]
        loop.widened += [f"{table}: {x}" for x in widened]
    loop.second = services.generate_fixes(
        dsn, config, out_dir=str(loop.out), round_trip="yes", timestamp="20260101000001"
    )
    return loop


def assert_never_worse(loop: Loop) -> None:
    assert loop.new_findings == set()
    assert loop.new_leaks == set()
    assert loop.lost == [] and loop.widened == []
    assert loop.second is not None and loop.second.written == [] and loop.second.rejected == []


def policies(dsn: str, table: str) -> dict[str, tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return {
            r[0]: (r[1], r[2] or "", r[3] or "")
            for r in conn.execute(
                "select policyname, cmd, qual, with_check from pg_policies where schemaname || '.' || tablename = %s",
                (table,),
            ).fetchall()
        }


CASES = [
    ("brewery", None, BREWERY),
    ("brewery", "r1_parent_guard", BREWERY),
    ("brewery", "r2_widen", BREWERY),
    ("brewery", "r4_partitions", BREWERY),
    ("brewery", "r6_clean", BREWERY),
    ("brewery", "r9_membership", BREWERY_JWT),
    ("farms", "f1_initplan_rewrite", FARMS),
    ("farms", "f2_helper_eq_true", FARMS),
    ("farms", "f3_ignores_own_context_fn", FARMS),
    ("farms", "f4_partition_blocks_all", FARMS),
    ("farms", "f5_two_party", FARMS),
    ("farms", "f6_for_all_next_to_kept", FARMS),
]


@pytest.mark.integration
@pytest.mark.parametrize("prefix,name,config", CASES, ids=[c[1] or "common" for c in CASES])
def test_the_fix_loop_never_makes_things_worse(databases, tmp_path, prefix, name, config):
    loop = run_loop(databases, tmp_path, prefix, name, config)
    assert_never_worse(loop)
    assert loop.first is not None and loop.first.rejected == [], [m.rejected for m in loop.first.rejected]


@pytest.mark.integration
def test_tenants_table_is_not_part_of_all(databases, tmp_path):
    loop = run_loop(databases, tmp_path, "brewery", None, BREWERY)
    assert loop.first is not None and loop.first.migrations == []
    assert any("public.tenants is the tenants table: not part of --all" in s for s in loop.first.skipped)
    assert policies(loop.dsn, "public.tenants") == {}


@pytest.mark.integration
def test_parent_guard_policy_is_rewritten_in_the_same_migration(databases, tmp_path):
    loop = run_loop(databases, tmp_path, "brewery", "r1_parent_guard", BREWERY)
    got = policies(loop.dsn, "public.gravity_readings")
    assert set(got) == {"readings_via_batch"}  # rewritten in place: no second permissive policy beside it
    cmd, using, check = got["readings_via_batch"]
    assert cmd == "ALL" and "tenant_id = ( SELECT (NULLIF(current_setting('brew.tenant'" in using and check == using
    rollback = next(loop.out.glob("*_rollback.sql")).read_text()
    assert "EXISTS ( SELECT 1" in rollback  # the parent-guard policy comes back exactly


@pytest.mark.integration
def test_replacements_keep_the_command_set(databases, tmp_path):
    loop = run_loop(databases, tmp_path, "brewery", "r2_widen", BREWERY)
    assert {k: v[0] for k, v in policies(loop.dsn, "public.hop_lots").items()} == {"hop_lots_read": "SELECT"}
    assert {k: v[0] for k, v in policies(loop.dsn, "public.kegs").items()} == {
        "kegs_read": "SELECT",
        "kegs_add": "INSERT",
        "kegs_edit": "UPDATE",
    }
    assert not any(k.startswith("multiple_permissive_policies") for k in loop.keys[1])


@pytest.mark.integration
def test_partitions_get_the_parents_policies(databases, tmp_path):
    loop = run_loop(databases, tmp_path, "brewery", "r4_partitions", BREWERY)
    assert policies(loop.dsn, "public.tank_logs_2026") == policies(loop.dsn, "public.tank_logs")
    with psycopg.connect(loop.dsn) as conn, conn.transaction(force_rollback=True):
        conn.execute("select set_config('brew.tenant', 'b0000000-0000-4000-8000-00000000000a', true)")
        conn.execute("set local role brew_app")
        seen = {r[0] for r in conn.execute("select distinct tenant_id::text from public.tank_logs_2026")}
    assert seen == {"b0000000-0000-4000-8000-00000000000a"}


@pytest.mark.integration
def test_initplan_fix_only_wraps_the_call(databases, tmp_path):
    loop = run_loop(databases, tmp_path, "farms", "f1_initplan_rewrite", FARMS)
    cmd, using, check = policies(loop.dsn, "public.harvest_logs")["harvest_member"]
    assert cmd == "ALL"
    assert "fh.user_id = ( SELECT auth.uid() AS uid)" in using and using == check
    assert "jwt" not in using


@pytest.mark.integration
def test_a_fix_reuses_the_tables_own_context_function(databases, tmp_path):
    loop = run_loop(databases, tmp_path, "farms", "f3_ignores_own_context_fn", FARMS)
    cmd, _using, check = policies(loop.dsn, "public.spray_logs")["spray_add"]
    assert cmd == "INSERT" and "current_farm()" in check


@pytest.mark.integration
def test_membership_fix_uses_the_membership_helper(databases, tmp_path):
    loop = run_loop(databases, tmp_path, "brewery", "r9_membership", BREWERY_JWT)
    ((name, (cmd, using, check)),) = policies(loop.dsn, "public.casks").items()
    assert cmd == "ALL" and "is_brewer" in using and "is_brewer" in check
    # a member (a JWT with only sub) sees exactly the brewery's own casks
    with psycopg.connect(loop.dsn) as conn, conn.transaction(force_rollback=True):
        conn.execute(
            """select set_config('request.jwt.claims', '{"sub": "c0000000-0000-4000-8000-0000000000a1"}', true)"""
        )
        conn.execute("set local role brew_web")
        seen = {r[0] for r in conn.execute("select tenant_id::text from public.casks")}
    assert seen == {"b0000000-0000-4000-8000-00000000000a"}


@pytest.mark.integration
def test_partitioned_index_does_not_block_the_security_fix(databases, tmp_path):
    loop = run_loop(databases, tmp_path, "farms", "f4_partition_blocks_all", FARMS)
    assert loop.first is not None
    actions = {(m.action, m.qualified) for m in loop.first.migrations}
    assert ("fix-rls-policy", "public.scale_readings") in actions
    assert ("add-composite-index", "public.scale_readings") in actions
    index = next(p for p in loop.out.glob("*add_composite_index_scale_readings.sql")).read_text()
    assert 'ON ONLY "public"."scale_readings"' in index and "ATTACH PARTITION" in index
    with psycopg.connect(loop.dsn) as conn:
        valid = conn.execute(
            "select indisvalid from pg_index where indexrelid = 'public.scale_readings_crate_id_idx'::regclass"
        ).fetchone()[0]
    assert valid


@pytest.mark.integration
def test_two_party_rows_are_never_given_one_tenant(databases, tmp_path):
    loop = run_loop(databases, tmp_path, "farms", "f5_two_party", FARMS)
    assert loop.first is not None
    assert not any(m.action == "add-tenant-isolation" for m in loop.first.migrations)
    # reported as two-party data (not as single-tenant data without its tenant column), before and after
    for keys in loop.keys:
        assert "two_party_table:public.trades" in keys and "missing_tenant_column:public.trades" not in keys
    # and the explicit action still refuses to pick a party
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.fixes.actions import build_context
    from dbguard_pipeline.fixes.actions.add_tenant_isolation import plan_add_tenant_isolation

    with pytest.raises(DbguardError, match="belongs to more than one tenant"):
        plan_add_tenant_isolation(build_context(services.introspect(loop.dsn, FARMS), FARMS, loop.dsn), "public.trades")
    with psycopg.connect(loop.dsn) as conn:
        cols = {
            r[0] for r in conn.execute("select column_name from information_schema.columns where table_name = 'trades'")
        }
    assert "farm_id" not in cols


@pytest.mark.integration
def test_nested_claim_is_a_json_path_and_never_locks_the_app_out(databases, tmp_path):
    """r8: `jwt_claim: app_metadata.brewery` is `auth.jwt() -> 'app_metadata' ->> 'brewery'` in the generated
    policy and column default, and in the audit: the loop converges (nothing rejected, a second pass writes
    nothing)."""
    loop = run_loop(databases, tmp_path, "brewery", "r8_jwt_dotted", BREWERY_JWT_NESTED)
    assert_never_worse(loop)
    assert not list(loop.out.glob("rejected/*.sql"))
    texts = [p.read_text() for p in loop.out.rglob("*add_tenant_isolation_tastings.sql")]
    assert texts and "SET DEFAULT (auth.jwt() -> 'app_metadata' ->> 'brewery')::uuid" in texts[0]
    assert "'app_metadata.brewery'" not in texts[0]
