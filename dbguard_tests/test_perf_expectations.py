"""The common GX expectation types run as dbguard SQL give exactly what Great Expectations gives on the same data.

One suite (every translated type, with mostly, strict bounds, NULLs, duplicates, an empty table, and a few that
must stay with GX) runs through Great Expectations alone and through dbguard's engine; every result must match:
success, element/unexpected/missing counts, percentages and observed values. The report names the engine.
"""

from __future__ import annotations

import pytest

from dbguard_pipeline.audit import run_audit
from dbguard_pipeline.config import Config, Expectation
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.expectations import run_expectations

from .conftest import run_sql

DATA = """
create schema shop;
create table shop.items (id int, sku text, qty int, price numeric(10,2), code varchar(20), note text,
                         region char(2), tenant_id uuid);
insert into shop.items
select g, case when g % 7 = 0 then null else 'sku-' || (g % 50) end,
       case when g % 11 = 0 then null else g % 13 end, g * 1.25,
       case when g % 3 = 0 then 'AB' || g when g % 3 = 1 then 'x-' || g end,
       case when g % 17 = 0 then null else 'n' || (g % 4) end,
       case when g % 2 = 0 then 'eu' else 'us' end, null
from generate_series(1, 400) g;
insert into shop.items (id, sku, qty) values (1, 'sku-1', 1), (2, null, null), (3, null, null);
create table shop.empty (a int, b text);
create table shop.all_null (a int, b text);
insert into shop.all_null select null, null from generate_series(1, 5);
"""


def e(table, type_, **kw):
    return Expectation(table=table, type=type_, kwargs=kw)


SUITE = (
    e("shop.items", "ExpectColumnValuesToNotBeNull", column="sku"),
    e("shop.items", "expect_column_values_to_not_be_null", column="sku", mostly=0.85),
    e("shop.items", "ExpectColumnValuesToNotBeNull", column="id"),
    e("shop.items", "ExpectColumnValuesToBeUnique", column="id"),
    e("shop.items", "ExpectColumnValuesToBeUnique", column="sku", mostly=0.1),
    e("shop.items", "ExpectColumnValuesToBeInSet", column="note", value_set=["n0", "n1", "n2"]),
    e("shop.items", "ExpectColumnValuesToBeInSet", column="qty", value_set=[1, 2, 3, 5, 8]),
    e("shop.items", "ExpectColumnValuesToBeInSet", column="region", value_set=["eu", "us"]),
    e("shop.items", "ExpectColumnValuesToBeBetween", column="qty", min_value=1, max_value=10),
    e("shop.items", "ExpectColumnValuesToBeBetween", column="qty", min_value=1, strict_min=True, mostly=0.5),
    e("shop.items", "ExpectColumnValuesToBeBetween", column="price", max_value=100.5, strict_max=True),
    e("shop.items", "ExpectColumnValuesToMatchRegex", column="code", regex="^AB[0-9]+$"),
    e("shop.items", "ExpectColumnValuesToMatchRegex", column="sku", regex="sku-[0-4]?[0-9]$", mostly=0.9),
    e("shop.items", "ExpectTableRowCountToBeBetween", min_value=1, max_value=100),
    e("shop.items", "ExpectTableRowCountToBeBetween", min_value=100),
    e("shop.items", "ExpectCompoundColumnsToBeUnique", column_list=["sku", "qty"]),
    e("shop.items", "ExpectCompoundColumnsToBeUnique", column_list=["id", "region"]),
    e("shop.empty", "ExpectColumnValuesToNotBeNull", column="a"),
    e("shop.empty", "ExpectColumnValuesToBeUnique", column="a"),
    e("shop.empty", "ExpectColumnValuesToBeBetween", column="a", min_value=0),
    e("shop.empty", "ExpectColumnValuesToBeInSet", column="a", value_set=[1]),
    e("shop.empty", "ExpectColumnValuesToMatchRegex", column="b", regex="x"),
    e("shop.empty", "ExpectTableRowCountToBeBetween", min_value=1),
    e("shop.empty", "ExpectCompoundColumnsToBeUnique", column_list=["a", "b"]),
    e("shop.all_null", "ExpectColumnValuesToNotBeNull", column="a"),
    e("shop.all_null", "ExpectColumnValuesToBeInSet", column="b", value_set=["x"]),
    e("shop.all_null", "ExpectCompoundColumnsToBeUnique", column_list=["a", "b"]),
    # stay with GX: types dbguard does not translate, a column that does not exist
    e("shop.items", "ExpectColumnValuesToNotBeInSet", column="region", value_set=["xx"]),
    e("shop.items", "ExpectColumnValueLengthsToBeBetween", column="code", min_value=3, max_value=4),
    e("shop.items", "ExpectColumnValuesToNotBeNull", column="no_such_column"),
)
GX_ONLY = {len(SUITE) - 3, len(SUITE) - 2, len(SUITE) - 1}


@pytest.mark.integration
def test_dbguard_sql_and_great_expectations_give_the_same_results(empty_dsn):
    run_sql(empty_dsn, DATA)
    snapshot = introspect(empty_dsn)
    config = Config(expectations=SUITE)
    gx = run_expectations(empty_dsn, config, snapshot, engine="gx")
    ours = run_expectations(empty_dsn, config, snapshot)
    assert len(gx) == len(ours) == len(SUITE)
    for i, (a, b) in enumerate(zip(gx, ours, strict=True)):
        assert a.engine == "great_expectations"
        assert b.engine == ("great_expectations" if i in GX_ONLY else "dbguard"), (i, b)
        assert (b.table, b.type, b.object, b.severity) == (a.table, a.type, a.object, a.severity)
        assert b.success == a.success, (i, SUITE[i], a, b)
        assert b.observed == a.observed, (i, SUITE[i], a.observed, b.observed)
        assert (b.error is None) == (a.error is None), (i, a.error, b.error)
    # the data really exercises both outcomes
    assert {r.success for r in ours} == {True, False, None}


@pytest.mark.integration
def test_the_report_names_the_engine_and_great_expectations_is_not_imported(empty_dsn, tmp_path):
    run_sql(empty_dsn, DATA)
    config = Config(expectations=SUITE[:-3])
    import subprocess
    import sys

    code = (
        "import sys; from dbguard_pipeline.audit import run_audit; from dbguard_pipeline.config import Config; "
        "from dbguard_tests.test_perf_expectations import SUITE; "
        f"r = run_audit({empty_dsn!r}, Config(expectations=SUITE[:-3]), rules=['expectation_failed']); "
        "assert r.findings; print('great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    result = run_audit(empty_dsn, config, rules=["expectation_failed"])
    assert result.findings and all(f.detail["engine"] == "dbguard" for f in result.findings)
    qty = [f for f in result.findings if f.object == "ExpectColumnValuesToBeBetween(qty)"]
    assert qty and "of 403 rows unexpected" in qty[0].message
