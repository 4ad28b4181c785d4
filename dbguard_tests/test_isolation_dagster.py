"""Dagster: the isolation_report asset and its blocking no_cross_tenant_leaks check against a real database."""
from __future__ import annotations

import dagster as dg
import pytest

from dbguard_pipeline.defs.isolation import isolation_checks, isolation_report, no_cross_tenant_leaks
from dbguard_pipeline.defs.resources import PostgresResource

from .isolation_helpers import APP, ROLES_SQL, TENANTS_SQL, scratch_database
from .test_isolation_cli import with_password

SECRET = "iso-Dagster-pw-41"

SAFE_ONLY = ROLES_SQL + TENANTS_SQL + f"""
CREATE TABLE public.notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                           tenant_id uuid NOT NULL REFERENCES public.tenants (id), body text NOT NULL);
INSERT INTO public.notes (tenant_id, body) SELECT id, 'note of ' || name FROM public.tenants;
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.notes FOR ALL TO {APP}
    USING (tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON public.notes TO {APP};
"""


def materialize(dsn: str, config_path: str | None = None):
    return dg.materialize([isolation_report, *isolation_checks],
                          resources={"database": PostgresResource(dsn=dsn, config_path=config_path)},
                          raise_on_error=False)


def test_exports():
    assert isolation_checks == [no_cross_tenant_leaks]
    spec = next(iter(no_cross_tenant_leaks.check_specs))
    assert spec.blocking and spec.name == "no_cross_tenant_leaks"
    assert isolation_report.group_names_by_key[isolation_report.key] == "dbguard_audit"
    assert dg.AssetKey("schema_snapshot") in isolation_report.asset_deps[isolation_report.key]


@pytest.mark.integration
def test_demo_fails_the_blocking_check_with_every_witness(demo_dsn):
    result = materialize(demo_dsn)
    assert not result.success  # a failed blocking check fails the run
    (mat,) = result.asset_materializations_for_node("isolation_report")
    md = mat.metadata
    assert md["leaks"].value == 39 and md["leaking_tables"].value == 12
    assert md["tables_probed"].value == 16 and md["not_probed"].value == 0
    grid = {r.data["relation"]: r.data for r in md["results"].value.records}  # a table in the UI
    assert len(grid) == 16
    assert [grid["public.garages"][c] for c in ("select", "insert", "update", "delete")] == ["LEAK"] * 4
    assert [grid["public.vision_metrics"][c] for c in ("select", "insert", "update", "delete")] == ["ok"] * 4
    assert next(iter(grid)) != "public.vision_metrics"  # leaking relations first
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "no_cross_tenant_leaks" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    witnesses = [r.data for r in check.metadata["witnesses"].value.records]
    assert len(witnesses) == 39
    assert any(w["relation"] == "public.vehicles" and w["command"] == "select"
               and "as authenticated with tenant A, SELECT on public.vehicles returned" in w["witness"]
               for w in witnesses)


@pytest.mark.integration
@pytest.mark.security
def test_isolated_database_passes_and_no_password_reaches_metadata(server_dsn, tmp_path):
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text(f"tenant:\n  app_role: {APP}\n")
    with scratch_database(server_dsn, SAFE_ONLY) as dsn:
        result = materialize(with_password(dsn, SECRET), str(cfg))
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["leaks"].value == 0
    (mat,) = result.asset_materializations_for_node("isolation_report")
    assert mat.metadata["probes"].value == 9
    everything = [str(v.value) for v in mat.metadata.values()] + [str(v.value) for v in check.metadata.values()]
    everything.append(result.output_for_node("isolation_report").to_json())
    everything += [str(ev.message) for ev in result.all_events]
    assert not [v for v in everything if SECRET in v]
