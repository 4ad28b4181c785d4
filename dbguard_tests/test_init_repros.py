"""`dbguard init` on the reproductions (dbguard_tests/repros: copies of ../shared/repros): the config it
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

HERE = Path(__file__).parent / "repros"
SHIM = Path(__file__).parents[1] / "dbguard_pipeline" / "demo" / "supabase_shim.sql"

# (files loaded in order, the hand-written config beside them)
CASES = {
    **{p.stem: ((p,), p.with_suffix(".yaml")) for p in sorted((HERE / "audit-and-probe").glob("*.sql"))},
    "fixes_common": ((HERE / "fixes/common.sql",), HERE / "fixes/dbguard.yaml"),
    "fixes_jwt_dotted": (
        (HERE / "fixes/common.sql", HERE / "fixes/r8_jwt_dotted.sql"),
        HERE / "fixes/dbguard_jwt.yaml",
    ),
    "fixes_membership": ((HERE / "fixes-membership/common.sql",), HERE / "fixes-membership/dbguard.yaml"),
    # the family: a membership helper on JWT tenancy, a context function, two references to the tenants table
    "fixes_r9_membership": (
        (HERE / "fixes/common.sql", HERE / "fixes/r9_membership.sql"),
        HERE / "fixes/dbguard_jwt_default.yaml",
    ),
    "membership_context_function": (
        (HERE / "fixes-membership/common.sql", HERE / "fixes-membership/f3_ignores_own_context_fn.sql"),
        HERE / "fixes-membership/dbguard.yaml",
    ),
    "membership_two_party": (
        (HERE / "fixes-membership/common.sql", HERE / "fixes-membership/f5_two_party.sql"),
        HERE / "fixes-membership/dbguard.yaml",
    ),
}


def _idempotent_roles(text: str) -> str:
    """Roles are cluster-wide and several tests share the server: create each only if it is missing."""
    return re.sub(
        r"(?im)^create role (\w+)([^;]*);",
        lambda m: f"do $$ begin if not exists (select 1 from pg_roles where rolname = '{m[1]}') "
        f"then create role {m[1]}{m[2]}; end if; end $$;",
        text,
    )


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
    if hand.tenant.context == "guc":
        assert inferred.tenant.guc == hand.tenant.guc
    elif "." in hand.tenant.jwt_claim:  # a nested claim the policies read
        assert inferred.tenant.jwt_claim == hand.tenant.jwt_claim
    got, want = answers(dsn, inferred), answers(dsn, hand)
    assert got[0] == want[0], "validate findings differ"
    assert got[1] == want[1], "test-isolation verdicts differ"
    assert want[1], "the probe ran on no table: the comparison says nothing"


def test_the_comparison_can_tell_configs_apart(databases):
    """Picking the wrong one of two references to the tenants table (what init did before it preferred the
    column named after the tenants table) changes both answers: the comparison above can fail."""
    files, hand_yaml = CASES["membership_two_party"]
    dsn = databases.create()
    load_repro(dsn, files)
    hand = load_config(hand_yaml)
    wrong = hand.model_copy(update={"tenant": hand.tenant.model_copy(update={"column": "seller_farm_id"})})
    got, want = answers(dsn, wrong), answers(dsn, hand)
    assert got[0] != want[0] and got[1] != want[1]
