"""Issue #13, item 11 (the generate-migration parts): a missing app_role is one line (exit 2), and hostile
table names (a newline, a carriage return, a tab, a quote and a backslash, U+2028) do not make ``--all``
write nothing: every file passes squawk, and the runner applies and rolls them back."""
from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from dbguard_pipeline.cli import main
from dbguard_pipeline.fixes.ledger import Runner
from dbguard_pipeline.fixes.script import unicode_identifier

from .dagster_support import write_config

HOSTILE = ["bad\nname", "cr\rname", "tab\tname", 'q"uote\\back\nslash', "ls\u2028name"]


@pytest.mark.integration
def test_all_with_a_missing_app_role_is_one_line(demo_dsn, tmp_path, capsys):
    cfg = write_config(tmp_path / "dbguard.yaml", tenant={"app_role": "nosuch_role"})
    out = tmp_path / "m"
    assert main(["generate-migration", "--all", "--dsn", demo_dsn, "--config", cfg, "--out-dir", str(out),
                 "--no-test"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "'nosuch_role' (config tenant.app_role) does not exist" in err
    assert not out.exists()


@pytest.mark.integration
def test_hostile_table_names_get_their_migrations(demo_dsn, tmp_path, capsys):
    with psycopg.connect(demo_dsn, autocommit=True) as conn:
        for name in HOSTILE:
            t = sql.Identifier("public", name)
            conn.execute(sql.SQL("create table {} (id int primary key, tenant_id uuid, body text)").format(t))
            conn.execute(sql.SQL("alter table {} enable row level security").format(t))
            conn.execute(sql.SQL("create policy open_to_all on {} using (true)").format(t))
    out = tmp_path / "m"
    assert main(["generate-migration", "--all", "--dsn", demo_dsn, "--out-dir", str(out), "--no-test"]) == 0
    printed = capsys.readouterr().out
    assert "0 violations" in printed
    files = sorted(p.name for p in out.glob("*.sql"))
    for name in HOSTILE:
        text = "\n".join((out / f).read_text() for f in files if not f.endswith("_rollback.sql"))
        assert f'"public".{unicode_identifier(name)}' in text  # one migration per hostile table, its name escaped
    fixes = [f for f in files if "fix_rls_policy" in f and not f.endswith("_rollback.sql")]
    assert len(fixes) >= 10 + len(HOSTILE)
    for f in files:  # no statement is split across lines by a name: comments and SQL lines stay whole
        for line in (out / f).read_text().splitlines():
            assert line.isprintable() or line == ""
    runner = Runner(demo_dsn, out)
    runner.up()
    with psycopg.connect(demo_dsn) as conn:
        for name in HOSTILE:
            row = conn.execute("select relforcerowsecurity or relrowsecurity, (select array_agg(polname::text) "
                               "from pg_policy where polrelid = c.oid) from pg_class c "
                               "where relname = %s and relnamespace = 'public'::regnamespace", (name,)).fetchone()
            assert row[0] and row[1] == [f"{name}_tenant_isolation"], (name, row)
    for state, name, _ in runner.status():
        assert state == "applied", name
    for f in reversed([f for f in files if not f.endswith("_rollback.sql")]):
        runner.rollback(f[:-4])
    with psycopg.connect(demo_dsn) as conn:
        for name in HOSTILE:
            assert conn.execute("select array_agg(polname::text) from pg_policy where polrelid = "
                                "%s::regclass", (sql.Identifier("public", name).as_string(conn),)).fetchone()[0] == ["open_to_all"]
