"""Dagster from day one: the Definitions load and the schema_snapshot asset materializes."""
from __future__ import annotations

import dagster as dg

from dbguard_pipeline.pg.dsn import parse_dsn
from dbguard_pipeline.defs import assets
from dbguard_pipeline.defs.definitions import defs
from dbguard_pipeline.defs.resources import PostgresResource


def test_definitions_load_and_contain_the_snapshot_asset():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert "schema_snapshot" in keys


def test_schema_snapshot_materializes_against_a_real_database(demo_dsn):
    result = dg.materialize([assets.schema_snapshot], resources={"database": PostgresResource(dsn=demo_dsn)})
    assert result.success
    snap = result.output_for_node("schema_snapshot")
    assert snap.table("public.garages") is not None
    (mat,) = result.asset_materializations_for_node("schema_snapshot")
    md = mat.metadata
    assert md["tables"].value == len(snap.tables) == 17
    assert md["tables_without_rls"].value == 3  # garages, conversation_messages, auth.users
    assert md["policies"].value == 14
    overview = md["tables_overview"].value  # a real table in the UI, one record per table
    assert [c.name for c in overview.schema.columns] == ["table", "rls", "forced", "policies", "rows_estimated"]
    rows = {r.data["table"]: r.data for r in overview.records}
    assert len(rows) == 17 and rows["public.garages"]["rls"] is False and rows["public.tenants"]["rls"] is True
    assert md["database"].value.endswith("/" + parse_dsn(demo_dsn)["dbname"])
