"""The data model every part of dbguard shares.

Plain frozen dataclasses (hashable, comparable) with a lossless JSON round trip:
``load_snapshot(dump_snapshot(s)) == s``. No Dagster, no database here.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Optional


# --------------------------------------------------------------------------- schema objects
@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type() text, e.g. "uuid", "character varying(40)", "bigint"
    not_null: bool
    default: Optional[str] = None
    identity: Optional[str] = None  # "always" | "by default" | None
    generated: Optional[str] = None  # generation expression of a STORED generated column
    position: int = 0


@dataclass(frozen=True)
class Constraint:
    name: str
    kind: str  # "primary_key" | "unique" | "check" | "foreign_key" | "exclusion"
    columns: tuple[str, ...] = ()
    definition: str = ""  # pg_get_constraintdef()
    validated: bool = True  # False for NOT VALID
    # foreign keys only
    ref_schema: Optional[str] = None
    ref_table: Optional[str] = None
    ref_columns: tuple[str, ...] = ()
    on_delete: Optional[str] = None  # "no action" | "restrict" | "cascade" | "set null" | "set default"
    on_update: Optional[str] = None


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[Optional[str], ...]  # key columns in order; None where the key is an expression
    definition: str  # pg_get_indexdef()
    unique: bool = False
    primary: bool = False
    predicate: Optional[str] = None  # partial index WHERE
    valid: bool = True
    expressions: Optional[str] = None  # pg_get_expr(indexprs) when any key is an expression


@dataclass(frozen=True)
class Policy:
    name: str
    permissive: bool  # False for AS RESTRICTIVE
    command: str  # "all" | "select" | "insert" | "update" | "delete"
    roles: tuple[str, ...]  # role names; "public" for PUBLIC
    using: Optional[str] = None  # pg_get_expr(polqual) text
    with_check: Optional[str] = None  # pg_get_expr(polwithcheck) text


@dataclass(frozen=True)
class Grant:
    grantee: str  # role name, "public" for PUBLIC
    privilege: str  # SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    kind: str  # "table" | "partitioned" | "partition"
    owner: str
    rls_enabled: bool
    rls_forced: bool
    row_estimate: int  # reltuples (-1 = never analyzed, as PostgreSQL 14+ reports)
    columns: tuple[Column, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    indexes: tuple[Index, ...] = ()
    policies: tuple[Policy, ...] = ()
    grants: tuple[Grant, ...] = ()
    parent: Optional[str] = None  # "schema.table" of the partitioned parent
    comment: Optional[str] = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @cached_property
    def _columns_by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    def column(self, name: str) -> Optional[Column]:
        return self._columns_by_name.get(name)

    @property
    def primary_key(self) -> Optional[Constraint]:
        for c in self.constraints:
            if c.kind == "primary_key":
                return c
        return None

    @property
    def foreign_keys(self) -> tuple[Constraint, ...]:
        return tuple(c for c in self.constraints if c.kind == "foreign_key")


@dataclass(frozen=True)
class View:
    schema: str
    name: str
    owner: str
    materialized: bool
    security_invoker: bool
    security_barrier: bool
    definition: str
    depends_on: tuple[str, ...] = ()  # "schema.table" of the relations it reads
    grants: tuple[Grant, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Function:
    schema: str
    name: str
    arguments: str  # pg_get_function_identity_arguments()
    returns: str
    language: str
    security_definer: bool
    volatility: str  # "immutable" | "stable" | "volatile"
    config: tuple[str, ...] = ()  # proconfig, e.g. ("search_path=''",)
    owner: str = ""
    body: Optional[str] = None  # prosrc for sql / plpgsql functions

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def search_path(self) -> Optional[str]:
        for item in self.config:
            if item.lower().startswith("search_path="):
                return item.split("=", 1)[1]
        return None


@dataclass(frozen=True)
class Role:
    name: str
    superuser: bool
    bypassrls: bool
    can_login: bool


@dataclass(frozen=True)
class Snapshot:
    database: str  # database name (never a DSN: no password can leak through a snapshot)
    server_version: str
    server_version_num: int
    current_user: str
    taken_at: str  # ISO 8601 UTC
    schemas: tuple[str, ...]
    tables: tuple[Table, ...] = ()
    views: tuple[View, ...] = ()
    functions: tuple[Function, ...] = ()
    roles: tuple[Role, ...] = ()

    @cached_property
    def _tables_by_key(self) -> tuple[dict[str, Table], dict[str, list[Table]]]:
        by_qualified: dict[str, Table] = {}
        by_name: dict[str, list[Table]] = {}
        for t in self.tables:
            by_qualified.setdefault(t.qualified, t)
            by_name.setdefault(t.name, []).append(t)
        return by_qualified, by_name

    def table(self, qualified_or_name: str) -> Optional[Table]:
        """Find a table by "schema.table" or, when unambiguous, by bare name (a dictionary look-up)."""
        by_qualified, by_name = self._tables_by_key
        found = by_qualified.get(qualified_or_name)
        if found is not None:
            return found
        matches = by_name.get(qualified_or_name, ())
        return matches[0] if len(matches) == 1 else None

    def role(self, name: str) -> Optional[Role]:
        for r in self.roles:
            if r.name == name:
                return r
        return None

    def summary(self) -> dict[str, int]:
        return {
            "tables": len(self.tables),
            "tables_with_rls": sum(1 for t in self.tables if t.rls_enabled),
            "tables_without_rls": sum(1 for t in self.tables if not t.rls_enabled),
            "policies": sum(len(t.policies) for t in self.tables),
            "views": len(self.views),
            "functions": len(self.functions),
            "columns": sum(len(t.columns) for t in self.tables),
            "indexes": sum(len(t.indexes) for t in self.tables),
            "foreign_keys": sum(len(t.foreign_keys) for t in self.tables),
        }


# --------------------------------------------------------------------------- findings
class Severity(str, enum.Enum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"critical": 3, "warning": 2, "info": 1}[self.value]


@dataclass(frozen=True)
class Finding:
    rule: str  # stable id, e.g. "weak_rls_policy"
    severity: Severity
    category: str  # "rls" | "tenancy" | "integrity" | "performance" | "security" | "expectations"
    schema: str
    table: str
    message: str
    remediation: str  # what to run to fix it
    object: Optional[str] = None  # policy, index, constraint or column name
    detail: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def cache_key(self) -> str:
        key = f"{self.rule}:{self.schema}.{self.table}"
        return f"{key}:{self.object}" if self.object else key

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "category": self.category,
            "schema": self.schema,
            "table": self.table,
            "object": self.object,
            "message": self.message,
            "cache_key": self.cache_key,
            "remediation": self.remediation,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        return cls(
            rule=d["rule"], severity=Severity(d["severity"]), category=d["category"],
            schema=d["schema"], table=d["table"], message=d["message"],
            remediation=d.get("remediation", ""), object=d.get("object"), detail=d.get("detail") or {},
        )


# --------------------------------------------------------------------------- JSON round trip
def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


def _build(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _build(args[0], value)
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_build(inner, v) for v in value)
    if origin is dict or tp is dict:
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {f.name: _build(hints[f.name], value[f.name]) for f in dataclasses.fields(tp) if f.name in value}
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    return value


def from_jsonable(tp: type, value: Any) -> Any:
    return _build(tp, value)


def dump_snapshot(snapshot: Snapshot, indent: Optional[int] = 2) -> str:
    return json.dumps(to_jsonable(snapshot), indent=indent, ensure_ascii=False, sort_keys=False)


def load_snapshot(text: str) -> Snapshot:
    return from_jsonable(Snapshot, json.loads(text))
