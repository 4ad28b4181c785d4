"""dbguard settings: the tenant model, thresholds, ignores, targets. Loaded from dbguard.yaml.

The tenant model is configuration, not code; the defaults fit Supabase and the demo database.

The settings are frozen dataclasses checked by a small validator that accepts exactly the plain values YAML
gives (strings, booleans, integers, floats, lists, mappings) and that pydantic would accept unchanged. Anything
else (a coercion, an unknown key, a wrong type, a failed check) is handed to the pydantic mirror of the same
models (``_pydantic_models``), so coercions and error messages are pydantic's, exactly as before, while a
plain dbguard.yaml (or none) never pays pydantic's ~100 ms import.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import KW_ONLY, InitVar, dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal, Optional

from dbguard_pipeline.errors import ConfigError

DEFAULT_CONFIG_NAMES = ("dbguard.yaml", "dbguard.yml")
_SEVERITIES = ("critical", "warning", "info")
_CONTEXTS = ("guc", "jwt")


class _Reject(Exception):
    """The fast path cannot vouch for a value: pydantic decides (and words the error)."""


def _cron(v: str) -> str:
    import re

    v = " ".join(v.split())
    if v in ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"):
        return v
    fields = v.split(" ")
    if len(fields) != 5 or not all(re.fullmatch(r"[0-9A-Za-z*,/\-?]+", f) for f in fields):
        raise ValueError(f"not a cron expression with 5 fields: {v!r}")
    return v


def _tz(v: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r}") from None
    return v


def _pct(v: float) -> float:
    if not 0 <= v <= 100:
        raise ValueError("must be between 0 and 100")
    return v


def _sample_pct(v: float) -> float:
    if not 0 < v <= 100:
        raise ValueError("must be more than 0 and at most 100")
    return v


def _timeout(v: int) -> int:
    if v < 1:
        raise ValueError("must be a positive number of milliseconds (the audit never runs without a timeout)")
    return v


def _workers(v: int) -> int:
    if not 0 <= v <= 64:
        raise ValueError("must be between 0 and 64")
    return v


def _count(v: int) -> int:
    if v < 0:
        raise ValueError("must be 0 or more")
    return v


# field kinds the fast path understands; every value must already be of the exact type pydantic would return
def _plain(kind: Any, v: Any) -> Any:
    if kind is str:
        if type(v) is not str:
            raise _Reject
        return v
    if kind is bool:
        if type(v) is not bool:
            raise _Reject
        return v
    if kind is int:
        if type(v) is not int:
            raise _Reject
        return v
    if kind is float:
        if type(v) is int and abs(v) < 2**53:  # YAML's `coverage_threshold: 90`: pydantic gives 90.0
            return float(v)
        if type(v) is not float:
            raise _Reject
        return v
    if kind == "optint":
        if v is not None and type(v) is not int:
            raise _Reject
        return v
    if kind == "optstr":
        if v is not None and type(v) is not str:
            raise _Reject
        return v
    if kind == "strs":
        if type(v) not in (list, tuple) or any(type(x) is not str for x in v):
            raise _Reject
        return tuple(v)
    if kind == "dict":
        if type(v) is not dict:
            raise _Reject
        return dict(v)
    if kind == "strs_by_str":
        if type(v) is not dict or any(type(k) is not str for k in v):
            raise _Reject
        return {k: _plain("strs", x) for k, x in v.items()}
    if isinstance(kind, tuple) and kind[0] == "lit":
        if type(v) is not str or v not in kind[1]:
            raise _Reject
        return v
    if isinstance(kind, tuple) and kind[0] == "model":
        return _plain_model(kind[1], v)
    if isinstance(kind, tuple) and kind[0] == "models":
        if type(v) not in (list, tuple):
            raise _Reject
        return tuple(_plain_model(kind[1], x) for x in v)
    raise _Reject


def _plain_model(cls: Any, v: Any) -> Any:
    if type(v) is cls:
        return v
    if type(v) is not dict:
        raise _Reject
    return cls._from_plain(v)


class _Settings:
    """Mixin: the fast validator and pydantic-compatible ``model_validate``."""

    _KINDS: dict[str, Any] = {}
    _CHECKS: dict[str, Any] = {}

    @classmethod
    def _from_plain(cls, data: dict) -> Any:
        kinds = cls._KINDS
        make: Any = cls
        values = {}
        for key, v in data.items():
            if type(key) is not str or key not in kinds:
                raise _Reject
            v = _plain(kinds[key], v)
            check = cls._CHECKS.get(key)
            if check is not None:
                try:
                    v = check(v)
                except ValueError:
                    raise _Reject from None
            values[key] = v
        return make(_checked=True, **values)

    @classmethod
    def model_validate(cls, data: Any) -> Any:
        """Like pydantic's: the validated settings, or ``pydantic.ValidationError``."""
        try:
            return _plain_model(cls, data)
        except _Reject:
            pass
        mirror = _pydantic_models()[cls.__name__]
        return _from_mirror(cls, mirror.model_validate(_to_plain(data)).model_dump())

    def __post_init__(self, _checked: bool) -> None:
        # Constructed directly (Config(schemas=["public"])): the same validation as model_validate.
        if _checked:
            return
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        checked = type(self).model_validate(values)
        for name in values:
            object.__setattr__(self, name, getattr(checked, name))


def _to_plain(v: Any) -> Any:
    if isinstance(v, _Settings):
        return {f.name: _to_plain(getattr(v, f.name)) for f in dataclasses.fields(v)}  # type: ignore[arg-type]
    if isinstance(v, dict):
        return {k: _to_plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_to_plain(x) for x in v)
    return v


def _from_mirror(cls: Any, dumped: dict) -> Any:
    values = {}
    for key, v in dumped.items():
        kind = cls._KINDS[key]
        if isinstance(kind, tuple) and kind[0] == "model":
            v = _from_mirror(kind[1], v)
        elif isinstance(kind, tuple) and kind[0] == "models":
            v = tuple(_from_mirror(kind[1], x) for x in v)
        values[key] = v
    return cls(_checked=True, **values)


@dataclass(frozen=True)
class TenantModel(_Settings):
    column: str = "tenant_id"
    column_type: str = "uuid"  # uuid | bigint | integer | text: the SQL type of the tenant id
    tenants_table: str = "public.tenants"  # schema.table
    tenants_key: str = "id"
    # How the application tells the database who the tenant is.
    context: Literal["guc", "jwt"] = "guc"
    guc: str = "app.current_tenant_id"
    jwt_claim: str = "tenant_id"
    # Functions (schema.name) whose result is the current tenant id, e.g. "public.current_tenant_id".
    context_functions: tuple[str, ...] = ()
    # The role the application's queries run as (Supabase: authenticated).
    app_role: str = "authenticated"
    # True when the application connects as the role that owns its tables: RLS must then be FORCEd.
    app_role_owns_tables: bool = False
    _: KW_ONLY
    _checked: InitVar[bool] = False

    @cached_property
    def tenants_schema(self) -> str:
        return self.tenants_table.split(".", 1)[0] if "." in self.tenants_table else "public"

    @cached_property
    def tenants_name(self) -> str:
        return self.tenants_table.split(".", 1)[1] if "." in self.tenants_table else self.tenants_table


TenantModel._KINDS = {
    "column": str, "column_type": str, "tenants_table": str, "tenants_key": str, "context": ("lit", _CONTEXTS),
    "guc": str, "jwt_claim": str, "context_functions": "strs", "app_role": str, "app_role_owns_tables": bool,
}


@dataclass(frozen=True)
class Expectation(_Settings):
    table: str  # schema.table
    type: str  # a Great Expectations expectation class name, e.g. ExpectColumnValuesToNotBeNull
    kwargs: dict = field(default_factory=dict)
    severity: Literal["critical", "warning", "info"] = "critical"
    _: KW_ONLY
    _checked: InitVar[bool] = False

    @classmethod
    def _from_plain(cls, data: dict) -> Any:
        if "table" not in data or "type" not in data:
            raise _Reject
        return super()._from_plain(data)


Expectation._KINDS = {"table": str, "type": str, "kwargs": "dict", "severity": ("lit", _SEVERITIES)}


@dataclass(frozen=True)
class AlertsConfig(_Settings):
    slack_channel: Optional[str] = None
    slack_token_env: str = "SLACK_BOT_TOKEN"
    slack_base_url: Optional[str] = None  # a Slack-compatible API endpoint (proxy, gateway); default Slack's
    webhook_url: Optional[str] = None
    log: bool = True
    ui_base_url: str = "http://localhost:3000"
    timeout_seconds: float = 10.0  # per delivery attempt
    _: KW_ONLY
    _checked: InitVar[bool] = False


AlertsConfig._KINDS = {
    "slack_channel": "optstr", "slack_token_env": str, "slack_base_url": "optstr", "webhook_url": "optstr",
    "log": bool, "ui_base_url": str, "timeout_seconds": float,
}


@dataclass(frozen=True)
class DatabaseTarget(_Settings):
    name: str
    dsn_env: Optional[str] = None  # name of the env variable that holds the DSN (preferred)
    dsn: Optional[str] = None  # a DSN without a password, or one read from the environment
    _: KW_ONLY
    _checked: InitVar[bool] = False

    @classmethod
    def _from_plain(cls, data: dict) -> Any:
        if "name" not in data:
            raise _Reject
        return super()._from_plain(data)


DatabaseTarget._KINDS = {"name": str, "dsn_env": "optstr", "dsn": "optstr"}


@dataclass(frozen=True)
class ScheduleConfig(_Settings):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    _: KW_ONLY
    _checked: InitVar[bool] = False


ScheduleConfig._KINDS = {"cron": str, "timezone": str}
ScheduleConfig._CHECKS = {"cron": _cron, "timezone": _tz}


@dataclass(frozen=True)
class Config(_Settings):
    tenant: TenantModel = field(default_factory=TenantModel)
    # Schemas to audit; empty = every non-system schema. Excluded ones are never audited.
    schemas: tuple[str, ...] = ()
    exclude_schemas: tuple[str, ...] = (
        "auth", "storage", "extensions", "graphql", "graphql_public", "realtime", "supabase_functions",
        "supabase_migrations", "vault", "pgsodium", "pgsodium_masks", "net", "cron", "pgbouncer", "_realtime",
        "dbguard",  # the migration runner's ledger
    )
    # Schemas exposed through an API (PostgREST): views there must not bypass RLS.
    exposed_schemas: tuple[str, ...] = ("public",)
    coverage_threshold: float = 100.0  # percent of rows that must carry a tenant
    required_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "schema.table" -> columns
    ignore: tuple[str, ...] = ()  # finding cache keys
    sample_row_limit: int = 5_000_000  # above this estimated size, data metrics use TABLESAMPLE
    sample_percent: float = 1.0
    tenant_index_min_rows: int = 10_000  # missing_tenant_index applies above this size
    statement_timeout_ms: int = 60_000
    lock_timeout_ms: int = 2_000
    # Parallel workers PostgreSQL may use per scan or join of the data metrics (transaction-local
    # max_parallel_workers_per_gather); None: the server's setting. Capped by the server's max_parallel_workers.
    parallel_workers: Optional[int] = None
    expectations: tuple[Expectation, ...] = ()
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    databases: tuple[DatabaseTarget, ...] = ()
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    _: KW_ONLY
    _checked: InitVar[bool] = False


Config._KINDS = {
    "tenant": ("model", TenantModel), "schemas": "strs", "exclude_schemas": "strs", "exposed_schemas": "strs",
    "coverage_threshold": float, "required_columns": "strs_by_str", "ignore": "strs", "sample_row_limit": int,
    "sample_percent": float, "tenant_index_min_rows": int, "statement_timeout_ms": int, "lock_timeout_ms": int,
    "parallel_workers": "optint", "expectations": ("models", Expectation), "alerts": ("model", AlertsConfig),
    "databases": ("models", DatabaseTarget), "schedule": ("model", ScheduleConfig),
}
Config._CHECKS = {
    "coverage_threshold": _pct, "sample_percent": _sample_pct, "statement_timeout_ms": _timeout,
    "lock_timeout_ms": _timeout, "sample_row_limit": _count, "tenant_index_min_rows": _count,
    "parallel_workers": lambda v: v if v is None else _workers(v),
}


@lru_cache(maxsize=1)
def _pydantic_models() -> dict[str, Any]:
    """The same settings as pydantic models: they decide whatever the fast path would not (and word the errors)."""
    from pydantic import BaseModel, ConfigDict, Field, field_validator

    class _Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

    class TenantModel(_Strict):
        column: str = "tenant_id"
        column_type: str = "uuid"
        tenants_table: str = "public.tenants"
        tenants_key: str = "id"
        context: Literal["guc", "jwt"] = "guc"
        guc: str = "app.current_tenant_id"
        jwt_claim: str = "tenant_id"
        context_functions: tuple[str, ...] = ()
        app_role: str = "authenticated"
        app_role_owns_tables: bool = False

    class Expectation(_Strict):
        table: str
        type: str
        kwargs: dict = Field(default_factory=dict)
        severity: Literal["critical", "warning", "info"] = "critical"

    class AlertsConfig(_Strict):
        slack_channel: Optional[str] = None
        slack_token_env: str = "SLACK_BOT_TOKEN"
        slack_base_url: Optional[str] = None
        webhook_url: Optional[str] = None
        log: bool = True
        ui_base_url: str = "http://localhost:3000"
        timeout_seconds: float = 10.0

    class DatabaseTarget(_Strict):
        name: str
        dsn_env: Optional[str] = None
        dsn: Optional[str] = None

    class ScheduleConfig(_Strict):
        cron: str = "0 2 * * *"
        timezone: str = "UTC"

        _c = field_validator("cron")(classmethod(lambda cls, v: _cron(v)))
        _t = field_validator("timezone")(classmethod(lambda cls, v: _tz(v)))

    defaults = Config(_checked=True)

    class Config_(_Strict):
        tenant: TenantModel = Field(default_factory=TenantModel)
        schemas: tuple[str, ...] = ()
        exclude_schemas: tuple[str, ...] = defaults.exclude_schemas
        exposed_schemas: tuple[str, ...] = ("public",)
        coverage_threshold: float = 100.0
        required_columns: dict[str, tuple[str, ...]] = Field(default_factory=dict)
        ignore: tuple[str, ...] = ()
        sample_row_limit: int = 5_000_000
        sample_percent: float = 1.0
        tenant_index_min_rows: int = 10_000
        statement_timeout_ms: int = 60_000
        lock_timeout_ms: int = 2_000
        parallel_workers: Optional[int] = None
        expectations: tuple[Expectation, ...] = ()
        alerts: AlertsConfig = Field(default_factory=AlertsConfig)
        databases: tuple[DatabaseTarget, ...] = ()
        schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

        _p = field_validator("coverage_threshold")(classmethod(lambda cls, v: _pct(v)))
        _s = field_validator("sample_percent")(classmethod(lambda cls, v: _sample_pct(v)))
        _t = field_validator("statement_timeout_ms", "lock_timeout_ms")(classmethod(lambda cls, v: _timeout(v)))
        _n = field_validator("sample_row_limit", "tenant_index_min_rows")(classmethod(lambda cls, v: _count(v)))
        _w = field_validator("parallel_workers")(classmethod(lambda cls, v: v if v is None else _workers(v)))

    return {
        "TenantModel": TenantModel, "Expectation": Expectation, "AlertsConfig": AlertsConfig,
        "DatabaseTarget": DatabaseTarget, "ScheduleConfig": ScheduleConfig, "Config": Config_,
    }


def _validate_file(p: Path, data: dict) -> Config:
    try:
        return _plain_model(Config, data)
    except _Reject:
        pass
    from pydantic import ValidationError

    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"config file {p}: {loc}: {msg}") from None


def load_config(path: Optional[str | os.PathLike] = None) -> Config:
    """Load dbguard.yaml. No path: $DBGUARD_CONFIG, else ./dbguard.yaml if present, else defaults."""
    if path is None:
        path = os.environ.get("DBGUARD_CONFIG")
        if path is None:
            for name in DEFAULT_CONFIG_NAMES:
                if Path(name).is_file():
                    path = name
                    break
    if path is None:
        return Config()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    import yaml  # only when there is a file to read

    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {p} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return _validate_file(p, data)
