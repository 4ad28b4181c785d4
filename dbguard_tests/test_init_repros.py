"""`dbguard init` on the reproductions (dbguard_tests/init_repros: copies of ../shared/repros): the config it
infers gives the same answers as the hand-written YAML beside each one -- the same findings (cache keys and
severities) from validate and the same verdicts from test-isolation."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from dbguard_pipeline import services
from dbguard_pipeline.config import load_config
from dbguard_pipeline.inference import infer
from dbguard_pipeline.inference.render import render_yaml
from dbguard_tests.conftest import run_sql

HERE = Path(__file__).parent / "init_repros"
SHIM = Path(__file__).parents[1] / "dbguard_pipeline" / "demo" / "supabase_shim.sql"

# (files loaded in order, the hand-written config beside them)
CASES = {
    **{p.stem: ((p,), p.with_suffix(".yaml")) for p in sorted((HERE / "audit-and-probe").glob("*.sql"))},
    "fixes_common": ((HERE / "fixes/common.sql",), HERE / "fixes/dbguard.yaml"),
    "fixes_jwt_dotted": ((HERE / "fixes/common.sql", HERE / "fixes/r8_jwt_dotted.sql"), HERE / "fixes/dbguard_jwt.yaml"),
    "fixes_membership": ((HERE / "fixes-membership/common.sql",), HERE / "fixes-membership/dbguard.yaml"),
}


def _idempotent_roles(text: str) -> str:
    """Roles are cluster-wide and several tests share the server: create each only if it is missing."""
    return re.sub(r"(?im)^create role (\w+)([^;]*);",
                  lambda m: f"do $$ begin if not exists (select 1 from pg_roles where rolname = '{m[1]}') "
                            f"then create role {m[1]}{m[2]}; end if; end $$;", text)


def load_repro(dsn: str, files) -> None:
    texts = [f.read_text() for f in files]
    if any("auth." in t for t in texts):
        run_sql(dsn, SHIM.read_text())
    for t in texts:
        run_sql(dsn, _idempotent_roles(t))


def answers(dsn: str, config) -> tuple[dict, dict]:
    audit = services.audit(dsn, config)
    report = services.probe(dsn, config)
    findings = {f.cache_key: f.severity.value for f in audit.findings}
    verdicts = {f"{t}:{c}": report.outcome(t, c)[0] for t, c in report.cases()}
    return findings, verdicts


@pytest.mark.parametrize("name", sorted(CASES))
def test_inferred_config_answers_like_the_hand_written_one(name, databases, tmp_path):
    files, hand_yaml = CASES[name]
    dsn = databases.create()
    load_repro(dsn, files)
    inference = infer(services.introspect(dsn))
    out = tmp_path / "dbguard.yaml"
    out.write_text(render_yaml(inference, name))
    inferred = load_config(out)
    hand = load_config(hand_yaml)
    assert inferred.tenant.column == hand.tenant.column
    assert inferred.tenant.tenants_table == hand.tenant.tenants_table
    assert inferred.tenant.app_role == hand.tenant.app_role
    assert inferred.tenant.context == hand.tenant.context
    got, want = answers(dsn, inferred), answers(dsn, hand)
    assert got[0] == want[0], "validate findings differ"
    assert got[1] == want[1], "test-isolation verdicts differ"
    assert want[1], "the probe ran on no table: the comparison says nothing"


def test_the_comparison_can_tell_configs_apart(databases):
    """The default config (GUC app.current_tenant_id, role authenticated) on the brewery co-op (GUC
    brew.tenant, role brew_app) answers differently: the test above is not comparing two empty answers."""
    from dbguard_pipeline.config import Config

    files, hand_yaml = CASES["fixes_common"]
    dsn = databases.create()
    load_repro(dsn, files)
    assert answers(dsn, Config()) != answers(dsn, load_config(hand_yaml))
