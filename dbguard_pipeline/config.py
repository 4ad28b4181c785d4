"""dbguard settings: the tenant model, thresholds, ignores, targets. Loaded from dbguard.yaml.

The tenant model is configuration, not code; the defaults fit Supabase and the demo database.
"""

from __future__ import annotations

import os
import sys
from functools import cached_property
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dbguard_pipeline.errors import ConfigError

DEFAULT_CONFIG_NAMES = ("dbguard.yaml", "dbguard.yml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantModel(_Strict):
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
    # Deprecated (accepted, with a warning when set): dbguard reads from the catalog whether an owner can
    # connect (LOGIN, membership, the app role itself) and reports rls_not_forced then. true still makes every
    # table with RLS enabled and not FORCEd a finding of rls_not_forced, as before.
    app_role_owns_tables: bool = False
    # Tables whose rows belong to more than one tenant, and the columns naming each party, e.g.
    # {"public.trades": ["buyer_farm_id", "seller_farm_id"]}. Such a table is never given a single tenant
    # column (add-tenant-isolation refuses it); a table with two or more references to the tenants table is
    # treated the same way even when it is not listed.
    table_tenant_columns: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @cached_property
    def tenants_schema(self) -> str:
        return self.tenants_table.split(".", 1)[0] if "." in self.tenants_table else "public"

    @cached_property
    def tenants_name(self) -> str:
        return self.tenants_table.split(".", 1)[1] if "." in self.tenants_table else self.tenants_table


class Expectation(_Strict):
    table: str  # schema.table
    type: str  # a Great Expectations expectation class name, e.g. ExpectColumnValuesToNotBeNull
    kwargs: dict = Field(default_factory=dict)
    severity: Literal["critical", "warning", "info"] = "critical"


class AlertsConfig(_Strict):
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


class DatabaseTarget(_Strict):
    name: str
    dsn_env: Optional[str] = None  # name of the env variable that holds the DSN (preferred)
    dsn: Optional[str] = None  # a DSN without a password, or one read from the environment


class ScheduleConfig(_Strict):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        import re

        v = " ".join(v.split())
        if v in ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"):
            return v
        fields = v.split(" ")
        if len(fields) != 5 or not all(re.fullmatch(r"[0-9A-Za-z*,/\-?]+", f) for f in fields):
            raise ValueError(f"not a cron expression with 5 fields: {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class Config(_Strict):
    tenant: TenantModel = Field(default_factory=TenantModel)
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
    required_columns: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # "schema.table" -> columns
    ignore: tuple[str, ...] = ()  # finding cache keys
    # Per-rule severity overrides (rule id -> critical | warning | info) and rules that never run. Rule ids are
    # checked against the registry where the rules are selected (audit.selected_rules): config cannot import
    # the rules (they import the config).
    severity: dict[str, Literal["critical", "warning", "info"]] = Field(default_factory=dict)
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
    # Parallel workers PostgreSQL may use per scan or join of the data metrics (transaction-local
    # max_parallel_workers_per_gather); None: the server's setting. Capped by the server's max_parallel_workers.
    parallel_workers: Optional[int] = None
    expectations: tuple[Expectation, ...] = ()
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    databases: tuple[DatabaseTarget, ...] = ()
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    # `dbguard migrate up` refuses pending migrations without a valid approval record (migrations/approvals/);
    # `dbguard fix` and the apply_approved_migrations job always require one. Recommended for teams.
    require_approval: bool = False
    # what `dbguard fix` backs up before applying: "data" (migrations that change rows), "all", "none"
    fix_backup: Literal["data", "all", "none"] = "data"
    backup_dir: Optional[str] = None  # where `dbguard fix` keeps its backups (default: $DBGUARD_HOME/backups)

    @field_validator("coverage_threshold")
    @classmethod
    def _pct(cls, v: float) -> float:
        if not 0 <= v <= 100:
            raise ValueError("must be between 0 and 100")
        return v

    @field_validator("sample_percent")
    @classmethod
    def _sample_pct(cls, v: float) -> float:
        if not 0 < v <= 100:
            raise ValueError("must be more than 0 and at most 100")
        return v

    @field_validator("statement_timeout_ms", "lock_timeout_ms")
    @classmethod
    def _timeout(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be a positive number of milliseconds (the audit never runs without a timeout)")
        return v

    @field_validator("parallel_workers")
    @classmethod
    def _workers(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and not 0 <= v <= 64:
            raise ValueError("must be between 0 and 64")
        return v

    @field_validator("sample_row_limit", "tenant_index_min_rows", "round_trip_row_limit")
    @classmethod
    def _count(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be 0 or more")
        return v


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
    import yaml

    path = config_path(path)
    if path is None:
        return Config()
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
    except ValidationError as exc:
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
