"""The schema snapshot: plain frozen dataclasses (hashable, comparable). No Dagster, no database here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Optional, TypeVar

_T = TypeVar("_T")


class cached_property(Generic[_T]):  # noqa: N801  (functools.cached_property without its per-call lock)
    """Computed once per instance, then read from the instance's ``__dict__`` (frozen dataclasses included).

    Python 3.11's ``functools.cached_property`` takes a lock on every first access of every instance; with
    thousands of tables that shows in profiles. The value is derived from frozen fields, so a race between
    two threads computes the same value twice at worst.
    """

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, cls: Optional[type] = None) -> _T:
        if obj is None:
            return self  # type: ignore[return-value]  # the descriptor itself, on the class
        value: _T = self.fn(obj)
        obj.__dict__[self.name] = value
        return value


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # format_type() text, e.g. "uuid", "character varying(40)", "bigint"
    not_null: bool
    default: Optional[str] = None
    identity: Optional[str] = None  # "always" | "by default" | None
    generated: Optional[str] = None  # generation expression of a STORED generated column
    position: int = 0


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    columns: tuple[Optional[str], ...]  # key columns in order; None where the key is an expression
    definition: str  # pg_get_indexdef()
    unique: bool = False
    primary: bool = False
    predicate: Optional[str] = None  # partial index WHERE
    valid: bool = True
    expressions: Optional[str] = None  # pg_get_expr(indexprs) when any key is an expression


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    permissive: bool  # False for AS RESTRICTIVE
    command: str  # "all" | "select" | "insert" | "update" | "delete"
    roles: tuple[str, ...]  # role names; "public" for PUBLIC
    using: Optional[str] = None  # pg_get_expr(polqual) text
    with_check: Optional[str] = None  # pg_get_expr(polwithcheck) text


@dataclass(frozen=True, slots=True)
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

    @cached_property
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
    # roles that may EXECUTE it (granted, or PUBLIC's default: "public"), its owner included; () in snapshot
    # files written before dbguard read it (unknown, not "nobody")
    executors: tuple[str, ...] = ()
    returns_rows: bool = False  # SETOF / TABLE (...), a row type or record: rows, not a scalar

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def search_path(self) -> Optional[str]:
        for item in self.config:
            if item.lower().startswith("search_path="):
                return item.split("=", 1)[1]
        return None


@dataclass(frozen=True, slots=True)
class Membership:
    """A role this role is a member of (``GRANT role TO member``); ``inherit``: the member has the role's
    privileges without ``SET ROLE`` (PostgreSQL 16's INHERIT option of the grant, before 16 the member's
    ``rolinherit``). Ownership is such a privilege: a member that inherits the owner counts as the owner."""

    role: str
    inherit: bool = True


@dataclass(frozen=True)
class Role:
    name: str
    superuser: bool
    bypassrls: bool
    can_login: bool
    memberships: tuple[Membership, ...] = ()  # direct ones; older snapshot files have none


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
