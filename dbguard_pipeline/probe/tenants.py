"""Tenants A and B: which tenant the probes act as and which they attack, chosen deterministically (or given),
and the user of tenant A that JWT tenancy sends as the ``sub`` claim."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.probe.report import Target
from dbguard_pipeline.probe.rows import NUM_TYPES, RowTenancy, base_type, column, lit, table_id
from dbguard_pipeline.semantics import tenancy


@dataclass(frozen=True)
class Tenants:
    a: str  # the tenant the probes act as
    b: str  # the tenant they attack
    user_a: Optional[str] = None  # JWT tenancy: a user of A only, sent as the ``sub`` claim
    missing: tuple[str, ...] = ()  # keys to create in the tenants table in each transaction
    # on one table: which tenant stands in for the chosen A or B, which has no row there ("" when none does)
    stand_in: str = ""
    explicit: bool = False  # given by the user (--tenant-a/--tenant-b): never stood in for

    def context(self, config: Config) -> dict[str, Any]:
        """The tenant context as the report shows it."""
        tm = config.tenant
        ctx: dict[str, Any] = {"mechanism": tm.context, "tenant_a": self.a, "tenant_b": self.b}
        if tm.context == "jwt":
            ctx.update(setting="request.jwt.claims", claim=tm.jwt_claim, user_a=self.user_a)
        else:
            ctx.update(setting=tm.guc)
        return ctx


def for_table(conn: psycopg.Connection[Any], row_tenancy: RowTenancy, tenants: Tenants, table: Table) -> Tenants:
    """The tenants to probe ``table`` with. When it holds no row of tenant B, the rows of another tenant (any
    but A: to A, every other tenant's rows are another tenant's) stand in for B's, so that no test row of B
    has to be inserted (a rolled-back row still extends a table whose last page is full); the same for tenant
    A, whose context the probes then act with on this table. The witnesses say so. Never on a two-party
    table, nor when a user of A is known (JWT and membership tenancy: that user may be a member of the other
    tenant), nor when the user chose A and B."""
    info = row_tenancy.info(table)
    if info is None or info.parties or tenants.user_a is not None or tenants.explicit:
        return tenants

    def one_other(*exclude: str) -> Optional[str]:
        expr = row_tenancy.expr(table)
        row = conn.execute(
            sql.SQL("SELECT {e}::text FROM {t} AS t WHERE {e} IS NOT NULL AND {e}::text <> ALL({x}) LIMIT 1").format(
                e=expr, t=table_id(table), x=sql.Literal(list(exclude))
            )
        ).fetchone()
        return None if row is None else str(row[0])

    def has(tenant: str) -> bool:
        return (
            conn.execute(
                sql.SQL("SELECT 1 FROM {} AS t WHERE {} LIMIT 1").format(
                    table_id(table), row_tenancy.pred(table, tenant)
                )
            ).fetchone()
            is not None
        )

    a, b, notes = tenants.a, tenants.b, []
    if not has(b):
        other = one_other(a, b)
        if other is not None:
            notes.append(f"tenant {other} stands in for B ({b}), which has no row here")
            b = other
    if not has(a):
        other = one_other(a, b, tenants.b)
        if other is not None:
            notes.append(f"tenant {other} stands in for A ({a}), which has no row here")
            a = other
    if not notes:
        return tenants
    missing = tuple(x for x in tenants.missing if x in (a, b))
    return Tenants(a, b, tenants.user_a, missing, "; ".join(notes))


def _synthetic_tenants(type_: str) -> list[str]:
    base, _ = base_type(type_)
    if base == "uuid":
        return [f"00000000-0000-4000-8000-0000db9a{i:04d}" for i in (1, 2)]
    if base in NUM_TYPES:
        return [str(1_900_000_000 + i) for i in (1, 2)]
    return ["dbguard-probe-tenant-a", "dbguard-probe-tenant-b"]


def pick_tenants(
    conn: psycopg.Connection[Any], row_tenancy: RowTenancy, explicit: Optional[Sequence[str]], targets: list[Target]
) -> Tenants:
    """``explicit`` (A, B), else the first two keys of the tenants table, else the first two tenants found in
    the targets' tenant columns, else synthetic keys (created inside each transaction when the tenants table
    lacks them)."""
    snapshot, config = row_tenancy.snapshot, row_tenancy.config
    tenants_table = snapshot.table(config.tenant.tenants_qualified)
    key = tenancy.tenant_column(tenants_table, config) if tenants_table is not None else None
    keys = (sql.Identifier(key), table_id(tenants_table)) if tenants_table is not None and key is not None else None
    found: list[str] = []
    existing: set[str] = set()
    if keys is not None:
        found = [
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT {k}::text FROM {t} ORDER BY {k} LIMIT 2").format(k=keys[0], t=keys[1])
            ).fetchall()
        ]
        existing = set(found)
    if explicit:
        a, b = (str(x) for x in explicit)
        if a == b:
            raise DbguardError("tenant A and tenant B must differ")
        if keys is not None:
            existing = {
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT {k}::text FROM {t} WHERE {k}::text = ANY({v})").format(
                        k=keys[0], t=keys[1], v=sql.Literal([a, b])
                    )
                ).fetchall()
            }
        found = [a, b]
    if len(found) < 2:
        for t in targets:
            info = row_tenancy.require(t.table) if t.table is not None else None
            # the tenant column, or a two-party table's first party column
            col = (info.direct_column or (info.parties[0] if info.parties else None)) if info is not None else None
            if t.table is not None and col:
                for (v,) in conn.execute(
                    sql.SQL("SELECT DISTINCT {c}::text FROM {t} WHERE {c} IS NOT NULL ORDER BY 1 LIMIT 2").format(
                        c=sql.Identifier(col), t=table_id(t.table)
                    )
                ).fetchall():
                    if v not in found and len(found) < 2:
                        found.append(v)
            if len(found) == 2:
                break
    if len(found) < 2:
        type_ = column(tenants_table, key).type if tenants_table is not None and key else config.tenant.column_type
        for s in _synthetic_tenants(type_):
            if len(found) < 2 and s not in found:
                found.append(s)
    a, b = found[0], found[1]
    missing = tuple(x for x in (a, b) if x not in existing) if keys is not None else ()
    user_a = _find_user_a(conn, row_tenancy, a, b)  # the ``sub`` claim (JWT), and the "join" INSERT's user
    return Tenants(a, b, user_a, missing, explicit=bool(explicit))


def _find_user_a(conn: psycopg.Connection[Any], row_tenancy: RowTenancy, a: str, b: str) -> Optional[str]:
    """JWT tenancy: a user of tenant A who is not also a member of tenant B (for the ``sub`` claim)."""
    # (rank, not in auth, table name) orders the candidates: membership tables keyed by (user, tenant) first
    candidates: list[tuple[int, bool, str, Table, str, str, str]] = []
    for t in tenancy.tenant_tables(row_tenancy.snapshot, row_tenancy.config):
        info = row_tenancy.info(t)
        if not info or not info.direct_column:
            continue
        for fk in t.foreign_keys:
            if len(fk.columns) == 1 and fk.ref_table == "users":
                pk = set(t.primary_key.columns) if t.primary_key else set()
                rank = 0 if {fk.columns[0], info.direct_column} <= pk else 1 if pk == {fk.columns[0]} else 2
                candidates.append(
                    (rank, fk.ref_schema != "auth", t.qualified, t, fk.columns[0], info.direct_column, info.type)
                )
    for *_ignored, t, col, tc, type_ in sorted(candidates, key=lambda c: c[:3]):
        row = conn.execute(
            sql.SQL(
                "SELECT m.{u}::text FROM {t} AS m WHERE m.{tc} = {a} AND m.{u} IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM {t} AS o WHERE o.{u} = m.{u} AND o.{tc} = {b}) ORDER BY m.{u} LIMIT 1"
            ).format(u=sql.Identifier(col), t=table_id(t), tc=sql.Identifier(tc), a=lit(a, type_), b=lit(b, type_))
        ).fetchone()
        if row:
            return str(row[0])
    return None
