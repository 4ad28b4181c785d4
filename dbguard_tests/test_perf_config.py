"""The settings' fast validator gives exactly what pydantic gives, and a plain dbguard.yaml never imports pydantic."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from dbguard_pipeline.config import Config, TenantModel, _pydantic_models, load_config
from dbguard_pipeline.errors import ConfigError


def _plain(v):
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


VALID = [
    {},
    {"schemas": ["public", "sales"], "coverage_threshold": 90, "sample_percent": 2.5},
    {"tenant": {"column": "org_id", "column_type": "bigint", "context": "jwt", "context_functions": ["public.f"]}},
    {"required_columns": {"public.a": ["x", "y"]}, "ignore": ["k:public.a"]},
    {"expectations": [{"table": "public.a", "type": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": "x"}}]},
    {"alerts": {"webhook_url": "http://127.0.0.1:1/x", "timeout_seconds": 3}, "schedule": {"cron": "0  3 * * *"}},
    {"databases": [{"name": "a", "dsn_env": "A_URL"}], "statement_timeout_ms": 5000, "sample_row_limit": 0},
    {"parallel_workers": 4},
    {"parallel_workers": None},
    # coercions pydantic makes: the fast path hands them over
    {"sample_row_limit": "1000", "tenant": {"app_role_owns_tables": "yes"}, "schemas": ("a",)},
    {"coverage_threshold": "99.5", "alerts": {"log": 0}},
]

INVALID = [
    {"coverage_threshold": 101},
    {"sample_percent": 0},
    {"statement_timeout_ms": 0},
    {"tenant_index_min_rows": -1},
    {"unknown": 1},
    {"tenant": {"context": "header"}},
    {"tenant": {"colum": "x"}},
    {"schedule": {"cron": "every day"}},
    {"schedule": {"timezone": "Mars/Olympus"}},
    {"expectations": [{"type": "X"}]},
    {"expectations": [{"table": "a.b", "type": "X", "severity": "fatal"}]},
    {"databases": [{"dsn": "postgresql://h/db"}]},
    {"schemas": "public"},
    {"required_columns": {"a": "x"}},
    {"sample_row_limit": 1.5},
    {"alerts": {"timeout_seconds": "soon"}},
    {"parallel_workers": 100},
    {"parallel_workers": -1},
]


@pytest.mark.parametrize("data", VALID)
def test_valid_settings_match_pydantic(data):
    mirror = _pydantic_models()["Config"].model_validate(data)
    assert _plain(Config.model_validate(data)) == mirror.model_dump()


@pytest.mark.parametrize("data", INVALID)
def test_invalid_settings_fail_with_pydantic_message(data, tmp_path):
    with pytest.raises(ValidationError) as mirror_err:
        _pydantic_models()["Config"].model_validate(data)
    with pytest.raises(ValidationError) as ours:
        Config.model_validate(data)
    assert ours.value.errors()[0]["msg"] == mirror_err.value.errors()[0]["msg"]
    assert ours.value.errors()[0]["loc"] == mirror_err.value.errors()[0]["loc"]
    import yaml

    p = tmp_path / "dbguard.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    loc = ".".join(str(x) for x in mirror_err.value.errors()[0]["loc"])
    assert str(err.value).startswith(f"config file {p}: {loc}: ")


def test_direct_construction_is_validated_and_normalised():
    c = Config(schemas=["public"], tenant=TenantModel(context="jwt"))
    assert c.schemas == ("public",) and c.tenant.context == "jwt"
    assert hash(c.tenant) == hash(TenantModel(context="jwt"))
    with pytest.raises(ValidationError):
        Config(coverage_threshold=150)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.schemas = ()  # type: ignore[misc]


def test_plain_config_file_does_not_import_pydantic(tmp_path):
    p = tmp_path / "dbguard.yaml"
    p.write_text(
        textwrap.dedent("""\
        tenant: {column: org_id, context: guc, app_role: app_user}
        schemas: [public]
        coverage_threshold: 99
        expectations:
          - {table: public.a, type: ExpectColumnValuesToNotBeNull, kwargs: {column: x}}
        """)
    )
    code = (
        "import sys; from dbguard_pipeline.config import load_config; "
        f"c = load_config({str(p)!r}); assert c.tenant.column == 'org_id', c; "
        "print('pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), check=True)
    assert out.stdout.strip() == "False"
