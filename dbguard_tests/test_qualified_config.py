"""Qualified names in dbguard.yaml (tenant.tenants_table, table_tenant_columns and required_columns keys,
expectations tables, context_functions): the plain ``schema.table`` form every config used still reads the
same; the SQL-quoted form (``"my.schema"."tenants"``) reads a schema or table whose name holds a dot; `dbguard
init` writes the quoted form when a name needs it."""

from __future__ import annotations

import pytest
import yaml

from dbguard_pipeline import services
from dbguard_pipeline.config import Config, Expectation, TenantModel, load_config
from dbguard_pipeline.errors import ConfigError
from dbguard_pipeline.pg.expectations import _resolve_table, run_expectations
from dbguard_pipeline.policy.context import _schema_and_name
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.text import config_qname, raw_qualified, split_qualified

from .conftest import run_sql
from .test_cli_foundation import assert_one_line_error, dbguard


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("public.orgs", ("public", "orgs")),
        ("orgs", ("public", "orgs")),
        ("a.b.c", ("a", "b.c")),  # the plain form: split on the first dot, as always
        ('Sch"ema ü.Tenants', ('Sch"ema ü', "Tenants")),  # a quote inside a plain name: plain, as always
        ('a"b; drop table x.Orgs', ('a"b; drop table x', "Orgs")),
        ('"my.schema"."tenants"', ("my.schema", "tenants")),
        ('"my.schema".tenants', ("my.schema", "tenants")),
        ('app."Order Lines"', ("app", "Order Lines")),
        ('"a""b; drop table x"."Order.Lines"', ('a"b; drop table x', "Order.Lines")),
        ('"x.y"', ("public", "x.y")),
    ],
)
def test_split_qualified_reads_both_forms(text, parts):
    assert split_qualified(text) == parts


@pytest.mark.parametrize("bad", ['"abc', '"a"."b"."c"', '"a"x', '""."t"', '"a".'])
def test_a_malformed_quoted_name_is_refused(bad):
    with pytest.raises(ValueError):
        split_qualified(bad)


@pytest.mark.parametrize(
    ("schema", "name"),
    [("public", "orgs"), ("my.schema", "tenants"), ("app", "Order Lines"), ('a"b; drop table x', "x.y"), ("S", "t")],
)
def test_config_qname_reads_back_as_written(schema, name):
    text = config_qname(schema, name)
    assert split_qualified(text) == (schema, name)
    assert (text == f"{schema}.{name}") == ((schema, name) == ("public", "orgs"))


def test_tenants_table_in_either_form():
    plain = TenantModel(tenants_table="app.orgs")
    assert (plain.tenants_schema, plain.tenants_name, plain.tenants_qualified) == ("app", "orgs", "app.orgs")
    dotted = TenantModel(tenants_table='"my.schema"."tenants"')
    assert (dotted.tenants_schema, dotted.tenants_name) == ("my.schema", "tenants")
    assert dotted.tenants_qualified == "my.schema.tenants"  # the lookup key, as Table.qualified
    assert dotted.tenants_table == '"my.schema"."tenants"'  # kept as written
    bare = TenantModel(tenants_table="orgs")
    assert (bare.tenants_schema, bare.tenants_name) == ("public", "orgs")


def test_table_keys_in_the_quoted_form_become_lookup_keys():
    cfg = Config(
        tenant=TenantModel(table_tenant_columns={'"my.schema"."trades"': ["a", "b"], "public.x": ["c", "d"]}),
        required_columns={'"my.schema"."t"': ["id"], "bare": ["id"]},
    )
    assert cfg.tenant.table_tenant_columns == {"my.schema.trades": ("a", "b"), "public.x": ("c", "d")}
    assert cfg.required_columns == {"my.schema.t": ("id",), "bare": ("id",)}
    assert raw_qualified('"my.schema"."t"') == "my.schema.t" and raw_qualified("public.t") == "public.t"
    assert Expectation(table='"my.schema"."t"', type="ExpectTableRowCountToBeBetween").table == '"my.schema"."t"'
    assert _resolve_table(None, '"my.schema"."t"') == ("my.schema", "t")
    assert _schema_and_name('"my.fns"."current_tenant"') == ("my.fns", "current_tenant")
    assert _schema_and_name("public.current_tenant") == ("public", "current_tenant")


@pytest.mark.parametrize(
    "body",
    [
        "tenant:\n  tenants_table: '\"my.schema.tenants'\n",
        "tenant:\n  table_tenant_columns:\n    '\"x': [a, b]\n",
        "expectations:\n  - table: '\"x'\n    type: ExpectTableRowCountToBeBetween\n",
    ],
)
def test_a_malformed_quoted_name_in_the_config_is_a_one_line_error(empty_dsn, tmp_path, body):
    path = tmp_path / "dbguard.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "\n" not in str(err.value) and "well-formed" in str(err.value)
    assert_one_line_error(dbguard("validate", "--dsn", empty_dsn, "--config", str(path)), "well-formed")


DOTTED = """
create schema "my.schema";
create table "my.schema"."tenants" (id bigint primary key);
create table "my.schema"."orders" (id int primary key, tenant_id bigint not null references "my.schema"."tenants" (id));
create table "my.schema"."lines" (id int primary key, tenant_id bigint not null references "my.schema"."tenants" (id));
"""


def test_init_writes_the_quoted_form_and_the_audit_reads_it(empty_dsn, tmp_path):
    run_sql(empty_dsn, DOTTED)
    out = tmp_path / "dbguard.yaml"
    proc = dbguard("init", "--dsn", empty_dsn, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(out.read_text())["tenant"]["tenants_table"] == '"my.schema"."tenants"'
    assert 'tenant column tenant_id -> "my.schema".tenants' in proc.stderr
    config = load_config(out)
    assert (config.tenant.tenants_schema, config.tenant.tenants_name) == ("my.schema", "tenants")
    snapshot = services.introspect(empty_dsn, config)
    tenants = snapshot.table("my.schema.tenants")
    assert tenants is not None and tenancy.is_tenants_table(tenants, config)
    rules = {f.rule for f in services.static_audit(snapshot, config).findings}
    assert "tenant_fk_missing" not in rules  # both tables reference the tenants table the config names
    # the ambiguous plain form reads schema "my", table "schema.tenants": the tenants table is not found
    wrong = config.model_copy(update={"tenant": TenantModel(tenants_table="my.schema.tenants", column_type="bigint")})
    assert (wrong.tenant.tenants_schema, wrong.tenant.tenants_name) == ("my", "schema.tenants")
    assert "tenant_fk_missing" in {f.rule for f in services.static_audit(snapshot, wrong).findings}


def test_an_expectation_on_a_dotted_schema_in_the_quoted_form(empty_dsn):
    run_sql(empty_dsn, DOTTED + 'insert into "my.schema"."tenants" values (1), (2);')
    e = Expectation(
        table='"my.schema"."tenants"', type="ExpectTableRowCountToBeBetween", kwargs={"min_value": 1, "max_value": 5}
    )
    config = Config(expectations=(e,))
    (r,) = run_expectations(empty_dsn, config, services.introspect(empty_dsn, config))
    assert r.error is None and r.success is True, r
    assert r.table == "my.schema.tenants"  # the key, as Table.qualified
    assert (r.schema_name, r.table_name) == ("my.schema", "tenants")
