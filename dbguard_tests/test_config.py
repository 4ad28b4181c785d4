"""The settings' fast path (plain dataclasses) answers exactly as pydantic does, and a plain dbguard.yaml never
imports pydantic.

The reference is the pydantic model built from the same dataclasses (``config._mirror``): it words every error
and makes every conversion. Random configs, valid and invalid, must give the same values, the same explicitly
set fields and the same first error through both.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import textwrap
import typing

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from dbguard_pipeline import config as C
from dbguard_pipeline.config import AlertsConfig, Config, TenantModel, load_config
from dbguard_pipeline.errors import ConfigError


def _form(m):
    """Comparable form: values, their types and the explicitly set fields, recursively."""
    if isinstance(m, BaseModel):
        names = list(type(m).model_fields)
        return (
            "model",
            type(m).__name__,
            tuple((k, _form(getattr(m, k))) for k in names),
            frozenset(m.model_fields_set),
        )
    if isinstance(m, C._Settings):
        names = [f.name for f in dataclasses.fields(m)]
        return (
            "model",
            type(m).__name__,
            tuple((k, _form(getattr(m, k))) for k in names),
            frozenset(m.model_fields_set),
        )
    if isinstance(m, tuple):
        return ("tuple", *(_form(x) for x in m))
    if isinstance(m, dict):
        return ("dict", tuple((k, type(k).__name__, _form(v)) for k, v in m.items()))
    return (type(m).__name__, m)


def _outcome(validate, data):
    try:
        return ("ok", _form(validate(data)))
    except ValidationError as exc:
        return ("error", [(e["loc"], e["msg"], e["type"]) for e in exc.errors()])


def _fast_only(data):
    """The fast path alone: None when it hands the data to pydantic."""
    try:
        return Config._fast(data)
    except C._Reject:
        return None


_VALUES = {
    str: ["x", "public.a", "", "app.t", "1000", "yes"],
    int: [0, 1, -1, 5, 60_000, 2**60, "7", True, 2.0, 1.5],
    float: [0.5, 0, 1, 50, 100, 100.0, 101, -0.1, "2.5", 2**60, True, "soon"],
    bool: [True, False, "yes", 0, 1, 2, None],
}


def _value(rng, tp, name):
    if name == "cron":
        return rng.choice(["0 3 * * *", " 0  3 * * * ", "@daily", "every day", 5])
    if name == "timezone":
        return rng.choice(["UTC", "Europe/Paris", "Mars/Olympus"])
    if isinstance(tp, type) and issubclass(tp, C._Settings):
        return _data(rng, tp) if rng.random() < 0.9 else rng.choice(["x", [], None])
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return rng.choice([*args, "nope"] if rng.random() < 0.1 else list(args))
    if origin is typing.Union:
        return None if rng.random() < 0.3 else _value(rng, next(a for a in args if a is not type(None)), name)
    if origin is tuple:
        if rng.random() < 0.05:
            return "public"  # a string where a list belongs
        return rng.choice([list, tuple])(_value(rng, args[0], name) for _ in range(rng.randint(0, 3)))
    if origin is dict:
        if rng.random() < 0.05:
            return ["not", "a", "mapping"]
        return {_value(rng, args[0], name): _value(rng, args[1], name) for _ in range(rng.randint(0, 2))}
    if tp is dict:
        return rng.choice([{"column": "x", "n": [1]}, {}, "x"])
    return rng.choice(_VALUES[tp])


def _data(rng, cls):
    hints = cls._hints()
    data = {k: _value(rng, tp, k) for k, tp in hints.items() if rng.random() < 0.35 or k in ("table", "type", "name")}
    if rng.random() < 0.03:
        data["colum"] = "x"  # an unknown key
    return data


def test_random_configs_answer_as_pydantic_does():
    rng = random.Random(12)
    mirror = C._mirror(Config).model_validate
    counts = {"ok": 0, "error": 0, "fast": 0}
    for _ in range(3_000):  # enough that each outcome is well represented as Config gains fields
        data = _data(rng, Config)
        expected = _outcome(lambda d: C._settings_from(Config, mirror(d)), data)
        assert _outcome(Config.model_validate, data) == expected, data
        counts[expected[0]] += 1
        fast = _fast_only(data)
        if fast is not None:  # whatever the fast path accepts, pydantic accepts with the same result
            assert expected == ("ok", _form(fast)), data
            counts["fast"] += 1
    # the sample exercises all three outcomes
    assert counts["ok"] > 300 and counts["error"] > 300 and counts["fast"] > 100, counts


@pytest.mark.parametrize(
    "data",
    [
        {"coverage_threshold": 101},
        {"sample_percent": 0},
        {"statement_timeout_ms": 0},
        {"parallel_workers": 65},
        {"tenant_index_min_rows": -1},
        {"unknown": 1},
        {"tenant": {"context": "header"}},
        {"tenant": {"colum": "x"}},
        {"schedule": {"cron": "every day"}},
        {"schedule": {"timezone": "Mars/Olympus"}},
        {"expectations": [{"type": "X"}]},
        {"databases": [{"dsn": "postgresql://h/db"}]},
        {"schemas": "public"},
        {"severity": {"rls_disabled": "fatal"}},
        {"sample_row_limit": 1.5},
    ],
)
def test_invalid_settings_are_one_line_with_pydantic_location_and_message(data, tmp_path):
    with pytest.raises(ValidationError) as reference:
        C._mirror(Config).model_validate(data)
    first = reference.value.errors()[0]
    p = tmp_path / "dbguard.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    loc = ".".join(str(x) for x in first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    assert str(err.value) == f"config file {p}: {loc}: {msg}"


def test_construction_copy_and_dump_keep_pydantic_semantics():
    c = Config(schemas=["public"], tenant=TenantModel(context="jwt"), coverage_threshold=90)
    assert c.schemas == ("public",) and c.coverage_threshold == 90.0 and type(c.coverage_threshold) is float
    assert c.model_fields_set == {"schemas", "tenant", "coverage_threshold"}
    assert c.tenant.model_fields_set == {"context"} and Config().tenant.model_fields_set == set()
    assert c == Config.model_validate({"schemas": ["public"], "tenant": {"context": "jwt"}, "coverage_threshold": 90})
    assert c.tenant.tenants_schema == "public" and c.tenant.tenants_name == "tenants"
    with pytest.raises(ValidationError):
        Config(coverage_threshold=150)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.schemas = ()  # type: ignore[misc]
    copied = c.model_copy(update={"exclude_rules": ("x",)})
    assert copied.exclude_rules == ("x",) and c.exclude_rules == () and "exclude_rules" in copied.model_fields_set
    named = c.tenant.model_copy(update={"guc": c.tenant.guc})
    assert named.model_fields_set == {"context", "guc"}
    assert c.tenant.model_dump()["context"] == "jwt" and "slack_channel" not in AlertsConfig().model_dump(
        exclude_none=True
    )
    coerced = Config.model_validate({"sample_row_limit": "1000", "tenant": {"app_role_owns_tables": "yes"}})
    assert coerced.sample_row_limit == 1000 and coerced.tenant.app_role_owns_tables is True
    assert coerced.tenant.model_fields_set == {"app_role_owns_tables"}


def test_a_plain_config_file_does_not_import_pydantic(tmp_path):
    p = tmp_path / "dbguard.yaml"
    p.write_text(
        textwrap.dedent(
            """\
            tenant: {column: org_id, context: guc, app_role: app_user, table_tenant_columns: {public.t: [a, b]}}
            schemas: [public]
            coverage_threshold: 99
            severity: {rls_disabled: warning}
            parallel_workers: 2
            expectations:
              - {table: public.a, type: ExpectColumnValuesToNotBeNull, kwargs: {column: x}}
            schedule: {cron: "0 3 * * *", timezone: Europe/Paris}
            databases: [{name: a, dsn_env: A_URL}]
            """
        )
    )
    code = (
        "import sys; from dbguard_pipeline.config import load_config; "
        f"c = load_config({str(p)!r}); assert c.tenant.column == 'org_id' and c.coverage_threshold == 99.0, c; "
        "print('pydantic' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False", out.stderr
