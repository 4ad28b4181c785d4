"""The representative statements measured on each tenant table, in two versions: as the application runs them
(no tenant predicate: row level security supplies it) and as the owner would with the ideal explicit predicate
(``WHERE tenant_id = <the tenant>``, or along the foreign-key path for tables without a tenant column).

- count:  the tenant's rows counted;
- page:   a page of them ordered by primary key;
- lookup: one row by primary key;
- join:   (tables reached through a foreign-key path) the table joined to its parent along that path.

Values are embedded as typed literals (no bind parameters: every run plans the same statement the same way);
every identifier goes through ``sql.Identifier``. Pure: nothing here talks to the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.fixes.sql import checked_type
from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.text import qname

PAGE_SIZE = 50
ALIAS = "t"


@dataclass(frozen=True)
class Statement:
    name: str  # count | page | lookup | join
    title: str  # for reports: "count of the tenant's rows"
    app: sql.Composed
    owner: sql.Composed


@dataclass(frozen=True)
class TenantSample:
    """The tenant a table is measured for, and one of its rows (for the look-up)."""

    tenant: str  # the tenant id as text
    tenant_type: str  # SQL type of the tenant column at the end of the path
    key: Optional[tuple[str, ...]] = None  # primary key values (text) of one of the tenant's rows
    key_types: tuple[str, ...] = ()
    user: Optional[str] = None  # JWT ``sub``: a member of the tenant (membership policies read it)
    share: Optional[float] = None  # the tenant's fraction of the table's rows, from pg_stats, when known


def typed(value: str, type_text: str) -> sql.Composed:
    return sql.SQL("CAST({} AS {})").format(sql.Literal(value), sql.SQL(checked_type(type_text)))


def tenant_filter(
    alias: str, table: Table, path: Sequence[tenancy.FkStep], config: Config, tenant: sql.Composable
) -> sql.Composed:
    """``alias.tenant_id = <tenant>``, or for a table reached through foreign keys
    ``(alias.fk) IN (SELECT p1.key FROM parent p1 WHERE <the same, one step further>)``."""
    if not path:
        col = tenancy.tenant_column(table, config)
        if col is None:  # the caller checked: tables without a tenant column have a path
            raise ValueError(f"{qname(table.schema, table.name)} has no tenant column")
        return sql.SQL("{} = {}").format(sql.Identifier(alias, col), tenant)
    step, rest = path[0], path[1:]
    inner = f"p{len(path)}"
    cols = [sql.Identifier(alias, c) for c in step.constraint.columns]
    refs = [sql.Identifier(inner, c) for c in step.constraint.ref_columns]
    left = cols[0] if len(cols) == 1 else sql.SQL("({})").format(sql.SQL(", ").join(cols))
    return sql.SQL("{} IN (SELECT {} FROM {} AS {} WHERE {})").format(
        left,
        sql.SQL(", ").join(refs),
        sql.Identifier(step.parent.schema, step.parent.name),
        sql.Identifier(inner),
        tenant_filter(inner, step.parent, rest, config, tenant),
    )


def _pk_order(table: Table) -> Optional[sql.Composed]:
    pk = table.primary_key
    if pk is None or not pk.columns:
        return None
    return sql.SQL(", ").join(sql.Identifier(ALIAS, c) for c in pk.columns)


def _pk_equals(table: Table, sample: TenantSample) -> Optional[sql.Composed]:
    pk = table.primary_key
    if pk is None or sample.key is None or len(sample.key) != len(pk.columns):
        return None
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(ALIAS, c), typed(v, t))
        for c, v, t in zip(pk.columns, sample.key, sample.key_types, strict=True)
    )


def build(
    table: Table, path: Sequence[tenancy.FkStep], sample: TenantSample, config: Config, page_size: int = PAGE_SIZE
) -> list[Statement]:
    """The statements for ``table`` (its tenant path from :func:`tenancy.tenant_path`) and the sampled tenant."""
    src = sql.SQL("{} AS {}").format(sql.Identifier(table.schema, table.name), sql.Identifier(ALIAS))
    tenant = typed(sample.tenant, sample.tenant_type)
    where = tenant_filter(ALIAS, table, path, config, tenant)
    out = [
        Statement(
            "count",
            "count of the tenant's rows",
            sql.SQL("SELECT count(*) FROM {}").format(src),
            sql.SQL("SELECT count(*) FROM {} WHERE {}").format(src, where),
        )
    ]
    order = _pk_order(table)
    if order is not None:
        out.append(
            Statement(
                "page",
                f"a page of {page_size} ordered by primary key",
                sql.SQL("SELECT * FROM {} ORDER BY {} LIMIT {}").format(src, order, sql.Literal(page_size)),
                sql.SQL("SELECT * FROM {} WHERE {} ORDER BY {} LIMIT {}").format(
                    src, where, order, sql.Literal(page_size)
                ),
            )
        )
    key = _pk_equals(table, sample)
    if key is not None:
        out.append(
            Statement(
                "lookup",
                "one row by primary key",
                sql.SQL("SELECT * FROM {} WHERE {}").format(src, key),
                sql.SQL("SELECT * FROM {} WHERE {} AND {}").format(src, key, where),
            )
        )
    if path:
        step = path[0]
        parent = sql.Identifier("p0")
        on = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("p0", rc), sql.Identifier(ALIAS, c))
            for c, rc in zip(step.constraint.columns, step.constraint.ref_columns, strict=True)
        )
        join = sql.SQL("{} JOIN {} AS {} ON {}").format(
            src, sql.Identifier(step.parent.schema, step.parent.name), parent, on
        )
        out.append(
            Statement(
                "join",
                f"joined to its parent {qname(step.parent.schema, step.parent.name)}",
                sql.SQL("SELECT count(*) FROM {}").format(join),
                sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
                    join, tenant_filter("p0", step.parent, path[1:], config, tenant)
                ),
            )
        )
    return out
