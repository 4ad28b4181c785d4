"""dbguard settings: the tenant model, thresholds, ignores, targets. Loaded from dbguard.yaml.

The tenant model is configuration, not code; the defaults fit Supabase and the demo database.

The settings are frozen dataclasses with one definition each (fields, types, defaults, checks). A small
validator accepts the values YAML gives that need no conversion (a string for a ``str``, a list of strings for
a ``tuple[str, ...]``, an int for a ``float``, ...), so the CLI never imports pydantic (~0.1 s) for a plain
dbguard.yaml. Anything else (a conversion, an unknown key, a wrong type, a failed check) goes to pydantic models
built from the same dataclasses on first need (:func:`_mirror`), so conversions and error messages are
pydantic's. The pydantic API the code uses is kept: ``model_validate`` (raising ``pydantic.ValidationError``),
``model_copy(update=...)``, ``model_dump()`` and ``model_fields_set``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, TypeVar

from dbguard_pipeline.errors import ConfigError

DEFAULT_CONFIG_NAMES = ("dbguard.yaml", "dbguard.yml")

_S = TypeVar("_S", bound="_Settings")


class _Reject(Exception):
    """The fast path cannot vouch for a value: pydantic decides (and words the error)."""


def _exact(tp: Any, v: Any) -> Any:
    """``v`` as pydantic would return it for type ``tp``, when that needs no conversion; else :class:`_Reject`."""
    if tp is str or tp is bool or tp is int:
        if type(v) is not tp:
            raise _Reject
        return v
    if tp is float:
        if type(v) is float:
            return v
        if type(v) is int and abs(v) < 2**53:  # `coverage_threshold: 90`: pydantic gives 90.0
            return float(v)
        raise _Reject
    if tp is type(None):
        if v is not None:
            raise _Reject
        return v
    if tp is dict:  # a bare dict: any keys and values, as given
        if type(v) is not dict:
            raise _Reject
        return dict(v)
    if isinstance(tp, type) and issubclass(tp, _Settings):
        if type(v) is tp:
            return v
        if type(v) is not dict:
            raise _Reject
        return tp._fast(v)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if type(v) is not str or v not in args:
            raise _Reject
        return v
    if origin is typing.Union or origin is types.UnionType:  # Optional[X]: None first, as pydantic tries
        if v is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise _Reject
        return _exact(rest[0], v)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if type(v) not in (list, tuple):
            raise _Reject
        return tuple(_exact(args[0], x) for x in v)
    if origin is dict and len(args) == 2:
        if type(v) is not dict:
            raise _Reject
        return {_exact(args[0], k): _exact(args[1], x) for k, x in v.items()}
    raise _Reject


class _Settings:
    """Base of the settings dataclasses: validation on construction and the pydantic API the code uses."""

    # field name -> check (raises ValueError with the message users see; may normalise the value)
    _CHECKS: ClassVar[dict[str, Any]] = {}
    _fields_set: frozenset[str]

    def __init__(self, **data: Any) -> None:
        try:
            values = self._fast_values(data)
            fields_set = frozenset(data)
        except _Reject:
            values, fields_set = _validated(type(self), data)
        self._fill(values, fields_set)

    # --------------------------------------------------------------- construction
    @classmethod
    def _hints(cls) -> dict[str, Any]:
        hints = cls.__dict__.get("_hints_cache")
        if hints is None:
            hints = typing.get_type_hints(cls)
            hints = {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            cls._hints_cache = hints  # type: ignore[attr-defined]
        return hints

    @classmethod
    def _fast_values(cls, data: dict) -> dict[str, Any]:
        hints = cls._hints()
        values = {}
        for key, v in data.items():
            if type(key) is not str or key not in hints:
                raise _Reject
            v = _exact(hints[key], v)
            check = cls._CHECKS.get(key)
            if check is not None:
                try:
                    v = check(v)
                except ValueError:
                    raise _Reject from None
            values[key] = v
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Reject  # a required field is missing
        return values

    @classmethod
    def _fast(cls: type[_S], data: dict) -> _S:
        self = cls.__new__(cls)
        self._fill(cls._fast_values(data), frozenset(data))
        return self

    def _fill(self, values: dict[str, Any], fields_set: frozenset[str]) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name in values:
                v = values[f.name]
            elif f.default_factory is not dataclasses.MISSING:
                v = f.default_factory()
            else:
                v = f.default
            object.__setattr__(self, f.name, v)
        object.__setattr__(self, "_fields_set", fields_set)

    # --------------------------------------------------------------- pydantic's API, as the code uses it
    @classmethod
    def model_validate(cls: type[_S], data: Any) -> _S:
        """The validated settings, or ``pydantic.ValidationError`` (pydantic's message and location)."""
        if type(data) is cls:
            return data
        if not isinstance(data, dict):
            values, fields_set = _validated(cls, data)  # raises: pydantic words it
            self = cls.__new__(cls)
            self._fill(values, fields_set)
            return self
        return cls(**data)

    @property
    def model_fields_set(self) -> set[str]:
        """The fields given explicitly (in the file, to the constructor, or by ``model_copy(update=...)``)."""
        return set(self._fields_set)

    def model_copy(self: _S, *, update: Optional[dict[str, Any]] = None) -> _S:
        """A copy with ``update`` applied, not validated (as pydantic's)."""
        new = type(self).__new__(type(self))
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        values.update(update or {})
        new._fill(values, self._fields_set | frozenset(update or ()))
        return new

    def model_dump(self, *, exclude_none: bool = False) -> dict[str, Any]:
        """The settings as plain values: nested settings as dicts, tuples kept (as pydantic's python mode)."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = _dump(getattr(self, f.name), exclude_none)
            if v is None and exclude_none:
                continue
            out[f.name] = v
        return out


def _dump(v: Any, exclude_none: bool) -> Any:
    if isinstance(v, _Settings):
        return v.model_dump(exclude_none=exclude_none)
    if isinstance(v, tuple):
        return tuple(_dump(x, exclude_none) for x in v)
    if isinstance(v, dict):
        return {k: _dump(x, exclude_none) for k, x in v.items()}
    return v


# ------------------------------------------------------------------- the pydantic path (conversions, errors)
_MIRRORS: dict[type[_Settings], Any] = {}


def _mirror(cls: type[_Settings]) -> Any:
    """The pydantic model of a settings dataclass: same fields, types, defaults and checks; unknown keys
    rejected, frozen. Built (and pydantic imported) on first need."""
    model = _MIRRORS.get(cls)
    if model is not None:
        return model
    from pydantic import ConfigDict, Field, create_model, field_validator

    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp = _mirror_type(cls._hints()[f.name])
        if f.default_factory is not dataclasses.MISSING:
            fields[f.name] = (tp, Field(default_factory=f.default_factory))
        elif f.default is not dataclasses.MISSING:
            fields[f.name] = (tp, f.default)
        else:
            fields[f.name] = (tp, ...)
    validators = {}
    for name, check in cls._CHECKS.items():

        def validate(_cls: Any, v: Any, _check: Any = check) -> Any:
            return _check(v)

        validators[f"_check_{name}"] = field_validator(name)(classmethod(validate))
    model = create_model(
        cls.__name__,
        __config__=ConfigDict(extra="forbid", frozen=True),
        __validators__=validators,  # type: ignore[arg-type]
        **fields,
    )
    _MIRRORS[cls] = model
    return model


def _mirror_type(tp: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, _Settings):
        return _mirror(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is None or origin is Literal or not args:
        return tp
    mapped = tuple(a if a is Ellipsis else _mirror_type(a) for a in args)
    if origin is typing.Union or origin is types.UnionType:
        return typing.Union[mapped]
    return origin[mapped]


def _plain_input(v: Any) -> Any:
    """Settings objects inside the input as the dicts that rebuild them (their explicitly set fields)."""
    if isinstance(v, _Settings):
        return {name: _plain_input(getattr(v, name)) for name in v._fields_set}
    if isinstance(v, dict):
        return {k: _plain_input(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_plain_input(x) for x in v)
    return v


def _validated(cls: type[_Settings], data: Any) -> tuple[dict[str, Any], frozenset[str]]:
    """Validate through pydantic (raises ``pydantic.ValidationError``): the values and the fields set."""
    model = _mirror(cls).model_validate(_plain_input(data))
    return _from_mirror(cls, model)


def _from_mirror(cls: type[_Settings], model: Any) -> tuple[dict[str, Any], frozenset[str]]:
    values = {}
    for name, tp in cls._hints().items():
        values[name] = _settings_from(tp, getattr(model, name))
    return values, frozenset(model.model_fields_set)


def _settings_from(tp: Any, v: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, _Settings):
        new = tp.__new__(tp)
        new._fill(*_from_mirror(tp, v))
        return new
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and v is not None:
        return tuple(_settings_from(args[0], x) for x in v)
    return v


# ------------------------------------------------------------------- checks
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


def _workers(v: Optional[int]) -> Optional[int]:
    if v is not None and not 0 <= v <= 64:
        raise ValueError("must be between 0 and 64")
    return v


def _count(v: int) -> int:
    if v < 0:
        raise ValueError("must be 0 or more")
    return v


def _qualified(v: str) -> str:
    """A qualified name in the plain (``schema.table``) or the SQL-quoted (``"my.schema"."t"``) form: checked,
    kept as written."""
    from dbguard_pipeline.text import split_qualified

    split_qualified(v)
    return v


def _qualified_keys(v: dict) -> dict:
    """A mapping keyed by table: quoted keys become lookup keys (``schema.table`` unquoted, as Table.qualified)."""
    from dbguard_pipeline.text import raw_qualified, split_qualified

    out = {}
    for key, value in v.items():
        split_qualified(key)
        out[raw_qualified(key)] = value
    return out


# ------------------------------------------------------------------- the settings
@dataclass(frozen=True, init=False)
class TenantModel(_Settings):
    column: str = "tenant_id"
    column_type: str = "uuid"  # uuid | bigint | integer | text: the SQL type of the tenant id
    tenants_table: str = "public.tenants"  # schema.table, or SQL-quoted: '"my.schema"."tenants"'
    tenants_key: str = "id"
    # How the application tells the database who the tenant is.
    context: Literal["guc", "jwt"] = "guc"
    guc: str = "app.current_tenant_id"
    jwt_claim: str = "tenant_id"
    # Functions (schema.name) whose result is the current tenant id, e.g. "public.current_tenant_id".
    context_functions: tuple[str, ...] = ()
    # The role the application's queries run as (Supabase: authenticated).
    app_role: str = "authenticated"
    # Deprecated (accepted, with a warning when set): dbguard reads from the catalog whether an owner can
    # connect (LOGIN, membership, the app role itself) and reports rls_not_forced then. true still makes every
    # table with RLS enabled and not FORCEd a finding of rls_not_forced, as before.
    app_role_owns_tables: bool = False
    # Tables whose rows belong to more than one tenant, and the columns naming each party, e.g.
    # {"public.trades": ["buyer_farm_id", "seller_farm_id"]}. Such a table is never given a single tenant
    # column (add-tenant-isolation refuses it); a table with two or more references to the tenants table is
    # treated the same way even when it is not listed.
    table_tenant_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    _CHECKS: ClassVar[dict[str, Any]] = {"tenants_table": _qualified, "table_tenant_columns": _qualified_keys}

    @cached_property
    def _tenants_parts(self) -> tuple[str, str]:
        from dbguard_pipeline.text import split_qualified

        schema, name = split_qualified(self.tenants_table)
        return schema or "public", name

    @cached_property
    def tenants_schema(self) -> str:
        return self._tenants_parts[0]

    @cached_property
    def tenants_name(self) -> str:
        return self._tenants_parts[1]

    @cached_property
    def tenants_qualified(self) -> str:
        """The tenants table's lookup key (``schema.table`` unquoted, as Table.qualified)."""
        return f"{self.tenants_schema}.{self.tenants_name}"


@dataclass(frozen=True, init=False)
class Expectation(_Settings):
    table: str  # schema.table, or SQL-quoted: '"my.schema"."t"'
    type: str  # a Great Expectations expectation class name, e.g. ExpectColumnValuesToNotBeNull
    kwargs: dict = field(default_factory=dict)
    severity: Literal["critical", "warning", "info"] = "critical"

    _CHECKS: ClassVar[dict[str, Any]] = {"table": _qualified}


@dataclass(frozen=True, init=False)
class AlertsConfig(_Settings):
    slack_channel: Optional[str] = None
    slack_token_env: str = "SLACK_BOT_TOKEN"
    slack_base_url: Optional[str] = None  # a Slack-compatible API endpoint (proxy, gateway); default Slack's
    webhook_url: Optional[str] = None
    log: bool = True
    # The Dagster UI the alert links to (<webserver_url>/runs/<run id>); unset: $DBGUARD_WEBSERVER_URL (which
    # `make dev` sets to the port it serves on), else http://127.0.0.1:3000. ui_base_url is its older name.
    webserver_url: Optional[str] = None
    ui_base_url: Optional[str] = None
    timeout_seconds: float = 10.0  # per delivery attempt


@dataclass(frozen=True, init=False)
class DatabaseTarget(_Settings):
    name: str
    dsn_env: Optional[str] = None  # name of the env variable that holds the DSN (preferred)
    dsn: Optional[str] = None  # a DSN without a password, or one read from the environment


@dataclass(frozen=True, init=False)
class ScheduleConfig(_Settings):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"

    _CHECKS: ClassVar[dict[str, Any]] = {"cron": _cron, "timezone": _tz}


@dataclass(frozen=True, init=False)
class Config(_Settings):
    tenant: TenantModel = field(default_factory=TenantModel)
    # Schemas to audit; empty = every non-system schema. Excluded ones are never audited.
    schemas: tuple[str, ...] = ()
    exclude_schemas: tuple[str, ...] = (
        "auth",
        "storage",
        "extensions",
        "graphql",
        "graphql_public",
        "realtime",
        "supabase_functions",
        "supabase_migrations",
        "vault",
        "pgsodium",
        "pgsodium_masks",
        "net",
        "cron",
        "pgbouncer",
        "_realtime",
        "dbguard",  # the migration runner's ledger
    )
    # Schemas exposed through an API (PostgREST): views there must not bypass RLS.
    exposed_schemas: tuple[str, ...] = ("public",)
    coverage_threshold: float = 100.0  # percent of rows that must carry a tenant
    required_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "schema.table" -> columns
    ignore: tuple[str, ...] = ()  # finding cache keys
    # Per-rule severity overrides (rule id -> critical | warning | info) and rules that never run. Rule ids are
    # checked against the registry where the rules are selected (audit.selected_rules): config cannot import
    # the rules (they import the config).
    severity: dict[str, Literal["critical", "warning", "info"]] = field(default_factory=dict)
    exclude_rules: tuple[str, ...] = ()
    sample_row_limit: int = 5_000_000  # above this estimated size, data metrics use TABLESAMPLE
    sample_percent: float = 1.0
    tenant_index_min_rows: int = 10_000  # missing_tenant_index applies above this size
    # Above this many rows, the scratch-copy round trip of a backfilling fix (add-tenant-isolation) keeps only
    # the first this-many rows of the table by key (the copy is a template copy: every parent row is there), so
    # that generating a migration does not take as long as running it; the header and the verdicts say so.
    # 0: always the whole copy.
    round_trip_row_limit: int = 200_000
    statement_timeout_ms: int = 60_000
    lock_timeout_ms: int = 2_000
    # The isolation probe inserts a test row (rolled back) into a table that holds no row of tenant A or B, and
    # where a write can be proven only by making it: a rolled-back insert still extends a table whose last page
    # is full. False: it never inserts anything, and what would need a test row is reported as not probed.
    probe_test_rows: bool = True
    # Parallel workers PostgreSQL may use per scan or join of the data metrics (transaction-local
    # max_parallel_workers_per_gather); None: the server's setting. Capped by the server's max_parallel_workers.
    parallel_workers: Optional[int] = None
    expectations: tuple[Expectation, ...] = ()
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    databases: tuple[DatabaseTarget, ...] = ()
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # `dbguard migrate up` refuses pending migrations without a valid approval record (migrations/approvals/);
    # `dbguard fix` and the apply_approved_migrations job always require one. Recommended for teams.
    require_approval: bool = False
    # what `dbguard fix` backs up before applying: "data" (migrations that change rows), "all", "none"
    fix_backup: Literal["data", "all", "none"] = "data"
    backup_dir: Optional[str] = None  # where `dbguard fix` keeps its backups (default: $DBGUARD_HOME/backups)

    _CHECKS: ClassVar[dict[str, Any]] = {
        "coverage_threshold": _pct,
        "sample_percent": _sample_pct,
        "statement_timeout_ms": _timeout,
        "lock_timeout_ms": _timeout,
        "parallel_workers": _workers,
        "sample_row_limit": _count,
        "tenant_index_min_rows": _count,
        "round_trip_row_limit": _count,
        "required_columns": _qualified_keys,
    }


def find_config(start: Optional[str | os.PathLike] = None) -> Optional[Path]:
    """The dbguard.yaml (or dbguard.yml) of ``start`` (default: the working directory) or of the nearest
    directory above it, as ruff and sqlfluff find theirs; None when there is none up to the root."""
    try:
        here = Path(start) if start is not None else Path.cwd()
    except FileNotFoundError:  # the working directory was removed
        return None
    for directory in (here, *here.parents):
        for name in DEFAULT_CONFIG_NAMES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def config_path(path: Optional[str | os.PathLike] = None) -> Optional[Path]:
    """Which config file applies: ``path`` (``--config``), else $DBGUARD_CONFIG, else the nearest
    dbguard.yaml from the working directory upwards, else None (the defaults)."""
    if path is None:
        path = os.environ.get("DBGUARD_CONFIG") or None
    if path is not None:
        return Path(path)
    return find_config()


def load_config(path: Optional[str | os.PathLike] = None) -> Config:
    """Load dbguard.yaml (:func:`config_path` says which); no file: the defaults."""
    path = config_path(path)
    if path is None:
        return Config()
    import yaml  # only for a file (~10 ms)

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
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
    try:
        config = Config.model_validate(data)
    except ValueError as exc:
        from pydantic import ValidationError  # already imported: only the pydantic path raises here

        if not isinstance(exc, ValidationError):
            raise
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"config file {p}: {loc}: {msg}") from None
    for line in deprecations(data):
        print(f"dbguard: warning: config file {p}: {line}", file=sys.stderr)
    return config


def deprecations(data: dict) -> list[str]:
    """One line per deprecated setting the (raw) config data sets."""
    tenant = data.get("tenant")
    if isinstance(tenant, dict) and "app_role_owns_tables" in tenant:
        return [
            "tenant.app_role_owns_tables is deprecated: dbguard now reads from the catalog whether a table's "
            "owner can connect (LOGIN, role membership, the app role itself) and reports rls_not_forced then; "
            "true still flags every table with RLS enabled and not forced. Remove the setting."
        ]
    return []
