"""The probe under faults (issue #13 items 1-3, issue #10 item 6): never a false "isolated", never a false LEAK,
no unreported trace. Databases written for the purpose: a typo in the tenant context, reads that fail, policy
recursion, isolation enforced by a deferred constraint trigger, a trigger that stamps the session's tenant,
sequences advanced by triggers and advisory locks taken by them."""
from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest

from dbguard_pipeline import services
from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.errors import ConfigError

from .isolation_helpers import APP, ROLES_SQL, TENANTS_SQL, scratch_database

pytestmark = pytest.mark.security

ALL = ("select", "insert", "update", "delete")
CTX = "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"
GUC = Config(tenant=TenantModel(app_role=APP))


def verdicts(report, q: str) -> dict[str, str]:
    return {cmd: report.outcome(q, cmd)[0] for cmd in report.commands_of(q)}


def table(name: str, extra: str = "") -> str:
    return f"""
CREATE TABLE public.{name} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), body text NOT NULL{extra});
INSERT INTO public.{name} (tenant_id, body) SELECT id, name FROM public.tenants;
"""


def policy(name: str, using: str = f"tenant_id = {CTX}", check: str = f"tenant_id = {CTX}") -> str:
    return (f"ALTER TABLE public.{name} ENABLE ROW LEVEL SECURITY;\n"
            f"CREATE POLICY p ON public.{name} FOR ALL TO {APP} USING ({using}) WITH CHECK ({check});\n")


GRANTS = f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP};"

FAULTS_SQL = ROLES_SQL + TENANTS_SQL + table("rls_off") + table("safe") + policy("safe") + """
-- a read that fails for tenant A (any error in a read probe): never isolated
CREATE FUNCTION public.boom(t uuid) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN IF t IS NOT NULL THEN RAISE EXCEPTION 'boom for %', t; END IF; RETURN false; END $$;
""" + table("read_fails") + policy("read_fails", using=f"public.boom({CTX})", check="true") + f"""
-- policy recursion: members reads members; projects reads members
CREATE TABLE public.members (user_name text NOT NULL, tenant_id uuid NOT NULL REFERENCES public.tenants (id));
INSERT INTO public.members SELECT 'u-' || name, id FROM public.tenants;
ALTER TABLE public.members ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.members FOR ALL TO {APP}
    USING (tenant_id IN (SELECT m.tenant_id FROM public.members m WHERE m.tenant_id = {CTX}));
""" + table("projects") + policy("projects", using="tenant_id IN (SELECT tenant_id FROM public.members)") + f"""
-- isolation enforced at COMMIT by a deferred constraint trigger (the policies let every write through)
CREATE FUNCTION public.same_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(NEW.tenant_id, OLD.tenant_id) IS DISTINCT FROM {CTX} OR (TG_OP = 'UPDATE' AND OLD.tenant_id IS DISTINCT FROM {CTX})
  THEN RAISE EXCEPTION 'tenant mismatch' USING ERRCODE = 'insufficient_privilege'; END IF;
  RETURN NULL;
END $$;
""" + table("deferred_guard") + policy("deferred_guard", using="true", check="true") + f"""
DROP POLICY p ON public.deferred_guard;
CREATE POLICY r ON public.deferred_guard FOR SELECT TO {APP} USING (tenant_id = {CTX});
CREATE POLICY w ON public.deferred_guard FOR INSERT TO {APP} WITH CHECK (true);
CREATE POLICY u ON public.deferred_guard FOR UPDATE TO {APP} USING (true) WITH CHECK (true);
CREATE POLICY d ON public.deferred_guard FOR DELETE TO {APP} USING (true);
CREATE CONSTRAINT TRIGGER guard AFTER INSERT OR UPDATE OR DELETE ON public.deferred_guard
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.same_tenant();

-- a BEFORE trigger that stamps the session's tenant on every row written (the policies check nothing)
CREATE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.tenant_id := {CTX}; RETURN NEW; END $$;
""" + table("stamped") + f"""
ALTER TABLE public.stamped ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON public.stamped FOR SELECT TO {APP} USING (tenant_id = {CTX});
CREATE POLICY w ON public.stamped FOR INSERT TO {APP} WITH CHECK (true);
CREATE POLICY u ON public.stamped FOR UPDATE TO {APP} USING (tenant_id = {CTX}) WITH CHECK (true);
CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON public.stamped FOR EACH ROW EXECUTE FUNCTION public.stamp();

-- traces: a trigger that advances a sequence and takes a session-level advisory lock
CREATE SEQUENCE public.audit_seq;
CREATE FUNCTION public.trace() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM nextval('public.audit_seq'); PERFORM pg_advisory_lock(4242); RETURN NEW; END $$;
""" + table("traced") + policy("traced") + """
CREATE TRIGGER trace BEFORE INSERT OR UPDATE ON public.traced FOR EACH ROW EXECUTE FUNCTION public.trace();
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO """ + APP + ";\n" + GRANTS


@pytest.fixture(scope="module")
def faults_dsn(server_dsn):
    with scratch_database(server_dsn, FAULTS_SQL) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def report(faults_dsn):
    return services.probe(faults_dsn, GUC)


def test_a_read_that_fails_is_not_probed_never_isolated(report):
    v = verdicts(report, "public.read_fails")
    assert v["select"] == "not probed"
    (np,) = [n for n in report.not_probed if n.table == "read_fails" and n.probe == "select_other_tenant"]
    assert "failed with an error" in np.reason and "boom for" in np.reason
    assert verdicts(report, "public.rls_off") == dict.fromkeys(ALL, "leak")
    assert verdicts(report, "public.safe") == dict.fromkeys(ALL, "isolated")


def test_policy_recursion_is_an_error_state_never_isolated(report):
    for q in ("public.members", "public.projects"):
        v = verdicts(report, q)
        assert "isolated" not in v.values(), (q, v)
        assert set(v.values()) == {"error"}, (q, v)
        assert report.errors()[q] == "policy recursion"
    data = json.loads(report.to_json())
    assert data["errors"] == {"public.members": "policy recursion", "public.projects": "policy recursion"}
    assert any(n.get("error") == "policy recursion" and "infinite recursion" in n["reason"] for n in data["not_probed"])
    assert "public.members: error: policy recursion" in report.to_text()


def test_a_deferred_constraint_trigger_is_checked_inside_the_probe(report):
    assert verdicts(report, "public.deferred_guard") == dict.fromkeys(ALL, "isolated")
    insert = [r for r in report.results if r.table == "deferred_guard" and r.probe == "insert_for_other_tenant"][0]
    assert "tenant mismatch" in insert.detail


def test_a_trigger_that_stamps_the_tenant_is_judged_on_the_stored_row(report):
    assert verdicts(report, "public.stamped")["insert"] == "isolated"
    insert = [r for r in report.results if r.table == "stamped" and r.probe == "insert_for_other_tenant"][0]
    assert "does not belong to tenant B" in insert.detail
    moves = [r for r in report.results if r.table == "stamped" and r.probe.startswith("move_row")]
    assert moves and all(r.isolated for r in moves), [r.detail for r in moves]


def test_sequences_that_moved_and_advisory_locks_are_reported(report, faults_dsn):
    (moved,) = report.sequences
    assert moved["sequence"] == "public.audit_seq" and moved["by"] >= 1 and "nextval() is never rolled back" in moved["why"]
    assert report.advisory_locks.get("public.traced", 0) >= 1
    text = report.to_text()
    assert "sequence public.audit_seq moved by" in text and "all rolled back" not in text
    assert json.loads(report.to_json())["summary"]["sequences_moved"] == 1


def test_the_demo_says_all_rolled_back_and_has_no_disagreement(demo_dsn):
    report = services.probe(demo_dsn, Config())
    assert report.sequences == [] and report.advisory_locks == {}
    assert report.disagreements == {}
    assert report.not_probed == []
    assert "all rolled back" in report.to_text()


def test_a_tenant_context_no_policy_reads_is_a_config_error(faults_dsn, tmp_path):
    typo = Config(tenant=TenantModel(app_role=APP, guc="app.tenant"))
    with pytest.raises(ConfigError, match=r"tenant.guc is 'app.tenant', but no policy .* app.current_tenant_id"):
        services.probe(faults_dsn, typo)
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text(f"tenant:\n  app_role: {APP}\n  guc: app.tenant_id\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "dbguard_pipeline.cli", "test-isolation", "--dsn", faults_dsn,
                          "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stdout == "" and "no policy or function" in out.stderr and "Traceback" not in out.stderr


def test_a_tenant_context_that_cannot_be_set_is_a_config_error_even_where_no_policy_reads_one(server_dsn):
    with scratch_database(server_dsn, ROLES_SQL + TENANTS_SQL + table("only_rls_off") + GRANTS) as dsn:
        with pytest.raises(ConfigError, match="custom setting with a prefix"):
            services.probe(dsn, Config(tenant=TenantModel(app_role=APP, guc="app_tenant")))
        # a setting nothing reads, on a database whose policies read none: the probe runs, and RLS off leaks
        report = services.probe(dsn, Config(tenant=TenantModel(app_role=APP, guc="app.tenant")))
    assert verdicts(report, "public.only_rls_off") == dict.fromkeys(ALL, "leak")


def test_recursion_makes_the_cli_exit_1(faults_dsn, tmp_path):
    cfg = tmp_path / "dbguard.yaml"
    cfg.write_text(f"tenant:\n  app_role: {APP}\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "dbguard_pipeline.cli", "test-isolation", "--dsn", faults_dsn,
                          "--config", str(cfg), "--table", "public.members"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1, out.stderr
    assert "ERROR" in out.stdout


def test_no_lock_or_row_left_behind(faults_dsn, report):
    with psycopg.connect(faults_dsn) as conn:
        assert conn.execute("select count(*) from pg_locks where locktype = 'advisory'").fetchone()[0] == 0
        assert conn.execute("select count(*) from public.traced").fetchone()[0] == 3


BIG_SQL = ROLES_SQL + TENANTS_SQL + f"""
CREATE TABLE public.big (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES public.tenants (id), body text NOT NULL);
INSERT INTO public.big (tenant_id, body) SELECT t.id, 'row ' || g FROM public.tenants t, generate_series(1, 66667) g;
CREATE INDEX ON public.big (tenant_id);
ALTER TABLE public.big ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.big FOR ALL TO {APP} USING (1 = 1) WITH CHECK (1 = 1);
""" + GRANTS


def _sizes(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(
            "select c.oid::regclass::text, pg_total_relation_size(c.oid) from pg_class c"
            " join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind in ('r', 'p')"
        ).fetchall())


def test_blind_writes_on_a_200k_row_table_leave_every_size_unchanged(server_dsn):
    """The blind UPDATE and DELETE used to rewrite every row (rolled back, the table stayed twice as large):
    now they stand on one row through a cursor, and keep their verdict."""
    with scratch_database(server_dsn, BIG_SQL, "VACUUM ANALYZE public.big") as dsn:
        before = _sizes(dsn)
        report = services.probe(dsn, GUC)
        after = _sizes(dsn)
    assert before["big"] > 10_000_000  # the table is large: 200,001 rows
    assert after == before
    assert verdicts(report, "public.big") == dict.fromkeys(ALL, "leak")
    blind = {r.probe: r for r in report.results if r.table == "big" and r.probe.endswith("_blind")}
    assert set(blind) == {"update_other_tenant_blind", "move_row_to_other_tenant_blind", "delete_other_tenant_blind"}
    assert all(not r.isolated and r.rows == 1 and "WHERE CURRENT OF" in r.statement for r in blind.values())
