"""Names people read are quoted (quoted only when needed, unambiguous) in diff, analyze, fix verdicts,
optimize-policy and backup messages, on the hostile fixture (schema ``a"b; drop table x``, table ``Order Lines``);
the SQL dbguard generates quotes every name; keys stay raw."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbguard_pipeline import backup, services
from dbguard_pipeline.analyze.render import headline, markdown, to_text
from dbguard_pipeline.analyze.report import TableResult
from dbguard_pipeline.analyze.suggest import plan_index
from dbguard_pipeline.config import load_config
from dbguard_pipeline.diff import render
from dbguard_pipeline.fixes.actions.optimize_policy import plan_optimize_policy
from dbguard_pipeline.fixes.verdicts import Access, Measurement, judge, leaks

from .conftest import run_sql

pytestmark = pytest.mark.security

HERE = Path(__file__).resolve().parent / "repros" / "explore"
SCHEMA = 'a"b; drop table x'
KEY = f"{SCHEMA}.Order Lines"  # the raw key (Table.qualified)
SHOWN = '"a""b; drop table x"."Order Lines"'  # what people read


def hostile(databases, extra: str = ""):
    dsn = databases.create()
    run_sql(dsn, (HERE / "hostile.sql").read_text(encoding="utf-8") + extra)
    config = load_config(HERE / "hostile.yaml")
    return dsn, config, services.introspect(dsn, config)


PER_ROW = """
alter table "a""b; drop table x"."Order Lines" enable row level security;
create policy "per row" on "a""b; drop table x"."Order Lines" for all to "App ""User""; x"
    using ("Org Id" = nullif(current_setting('app.org', true), '')::uuid);
"""


def test_optimize_policy_says_the_quoted_names_and_generates_quoted_sql(databases):
    dsn, config, snapshot = hostile(databases, PER_ROW)
    m = plan_optimize_policy(snapshot, config, KEY)
    assert m is not None
    assert any(w.startswith('policy "per row": ') for w in m.what), m.what
    assert 'restore the expressions of policy "per row"' in m.undo
    sql_text = "\n".join(s for b in m.forward for s in b.statements)
    assert f'ALTER POLICY "per row" ON {SHOWN}' in sql_text
    assert m.params == {"table": KEY} and all(f.startswith(f"auth_rls_initplan:{KEY}:") for f in m.fixes)


def test_analyze_index_suggestion_and_headline_quote_the_table(databases):
    dsn, config, snapshot = hostile(databases)
    m = plan_index(snapshot, config, KEY, ("Qty",))
    assert m is not None
    assert len(m.what) == 1 and m.what[0].endswith(f' on {SHOWN} ("Qty") concurrently'), m.what
    sql_text = "\n".join(s for b in m.forward for s in b.statements)
    assert 'ON "a""b; drop table x"."Order Lines" ("Qty")' in sql_text
    result = TableResult(KEY, shown=SHOWN)
    result.status, result.reason = "skipped", "no rows"
    assert headline(result) == f"skipped {SHOWN}: no rows"
    assert result.to_dict()["table"] == KEY  # the JSON field stays the key


def test_verdict_lines_quote_the_tables(databases):
    dsn, config, snapshot = hostile(databases)
    found, note = leaks(dsn, config, snapshot, [KEY])
    assert note == "" and found and all(x.startswith(f"{SHOWN} ") for x in found), found
    other = f"{SCHEMA}.select"
    before = Measurement(
        access={KEY: {"context": Access(visible=1)}, other: {"context": Access(visible=1)}},
        names={KEY: SHOWN, other: '"a""b; drop table x"."select"'},
    )
    after = Measurement(access={KEY: {"context": Access(visible=0)}, other: {"context": Access(visible=1)}})
    v = judge(before, after)
    assert v.lost and all(x.startswith(f"{SHOWN} select") for x in v.lost), v.lost


def test_diff_names_the_quoted_table(databases):
    dsn, config, before = hostile(databases)
    run_sql(dsn, 'alter table "a""b; drop table x"."Order Lines" add column "New Col" text;')
    after = services.introspect(dsn, config)
    text = render(services.diff(before, after, config), "text")
    assert SHOWN in text and '"New Col"' in text, text


def test_backup_messages_quote_the_table(databases, tmp_path):
    dsn, config, snapshot = hostile(databases)
    lines: list[str] = []
    taken = backup.take(dsn, [SHOWN], out_dir=tmp_path, log=lines.append)
    assert any(ln.startswith(f"counted {SHOWN}: ") for ln in lines), lines
    assert [t.qualified for t in taken.manifest.tables] == [SHOWN]


def test_analyze_report_names_the_quoted_table(databases):
    dsn, config, snapshot = hostile(databases, PER_ROW)
    report = services.analyze(dsn, config, [KEY], snapshot=snapshot, runs=1, prove=False, top_statements=0)
    (result,) = [t for t in report.tables if t.table == KEY]
    assert result.name == SHOWN
    assert headline(result).startswith(("RLS costs ", f"skipped {SHOWN}")) and SHOWN in headline(result)
    assert SHOWN in to_text(report, threshold=0.0) and SHOWN in markdown(report)
    assert result.to_dict()["table"] == KEY  # the JSON field stays the key
