"""The UI: dagster-webserver serves the code location of workspace.yaml; its GraphQL API shows the asset graph
(nodes and edges), the kinds and groups, and the checks' latest results of a real audit run."""
from __future__ import annotations

import json
import os
import urllib.request

import pytest

import dagster as dg
from dbguard_pipeline.devtools.ui_screenshot import serve_ui
from dbguard_tests.dagster_support import run_nightly

STARTUP_TIMEOUT_S = 180

QUERY = """
{
  workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } } }
  assetNodes {
    assetKey { path }
    groupName
    kinds
    description
    dependencyKeys { path }
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks {
          name
          blocking
          executionForLatestMaterialization { status runId evaluation { success severity description } }
        }
      }
    }
  }
}
"""


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        body = json.loads(resp.read())
    assert "errors" not in body, body.get("errors")
    return body["data"]


@pytest.mark.integration
def test_webserver_graphql_shows_the_asset_graph_and_latest_check_results(demo_dsn, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = run_nightly(instance, demo_dsn)  # results the UI must show
    env = {**os.environ, "DAGSTER_HOME": str(home), "DBGUARD_DATABASE_URL": demo_dsn,
           "PYTHONWARNINGS": "ignore"}
    env.pop("DBGUARD_CONFIG", None)
    with serve_ui(env, tmp_path / "webserver.log", STARTUP_TIMEOUT_S) as port:
        data = graphql(port, QUERY)

    (location,) = data["workspaceOrError"]["locationEntries"]
    assert location["name"] == "dbguard" and location["loadStatus"] == "LOADED"
    assert location["locationOrLoadError"]["__typename"] == "RepositoryLocation"

    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    edges = {(dep_key, key) for key, n in nodes.items() for dep_key in ("/".join(d["path"]) for d in n["dependencyKeys"])}
    for child in ("rls_audit", "tenant_coverage", "data_integrity", "isolation_report"):
        assert ("schema_snapshot", child) in edges
        assert nodes[child]["groupName"] == "dbguard_audit" and nodes[child]["kinds"] == ["postgres"]
        assert nodes[child]["description"]
    for child in ("fleet/rls_audit", "fleet/tenant_coverage", "fleet/data_integrity"):
        assert ("fleet/schema_snapshot", child) in edges and nodes[child]["groupName"] == "dbguard_fleet"

    def checks_of(key):
        return {c["name"]: c for c in nodes[key]["assetChecksOrError"]["checks"]}

    rls = checks_of("rls_audit")
    assert set(rls) == {"no_critical_findings", "no_warning_findings", "no_new_findings", "no_policy_weakened",
                        "no_new_table_without_rls", "freshness_check"}
    assert rls["freshness_check"]["blocking"] is True
    crit = rls["no_critical_findings"]
    assert crit["blocking"] is True
    latest = crit["executionForLatestMaterialization"]
    assert latest["runId"] == run.run_id and latest["status"] == "FAILED"
    assert latest["evaluation"]["severity"] == "ERROR" and latest["evaluation"]["success"] is False
    assert "public.garages" in latest["evaluation"]["description"]
    warn = rls["no_warning_findings"]["executionForLatestMaterialization"]
    assert warn["status"] == "FAILED" and warn["evaluation"]["severity"] == "WARN"
    cov = checks_of("tenant_coverage")["coverage_above_threshold"]["executionForLatestMaterialization"]
    assert cov["status"] == "SUCCEEDED"
    assert "no_cross_tenant_leaks" in checks_of("isolation_report")
