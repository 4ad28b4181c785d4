"""What every planner shares: the planning context (snapshot, config, the audit's findings), NothingToFix, and
small helpers for names, roles, policies and the read-only data checks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional

from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError, NotFoundError
from dbguard_pipeline.fixes.plan import Migration
from dbguard_pipeline.fixes.sql import pg_name, role_name
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.model.schema import Policy, Snapshot, Table
from dbguard_pipeline.text import qname, quoted, quoted_qname


class NothingToFix(Exception):
    """The database already has what the action would create: write nothing, exit 0."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass
class Context:
    snapshot: Snapshot
    config: Config
    dsn: Optional[str] = None  # for the data checks; None skips them (with a note)
    findings: list[Finding] = field(default_factory=list)  # the static rules' findings on this snapshot
    notes: list[str] = field(default_factory=list)

    def table_findings(self, table: Table, rules: Iterable[str]) -> list[Finding]:
        wanted = set(rules)
        return [f for f in self.findings if f.rule in wanted and f.schema == table.schema and f.table == table.name]


def build_context(snapshot: Snapshot, config: Config, dsn: Optional[str] = None) -> Context:
    """A planning context with the audit's static findings (those the config ignores left out)."""
    from dbguard_pipeline.audit import split_ignored, static_findings

    findings, _ignored = split_ignored(static_findings(snapshot, config), config)
    return Context(snapshot=snapshot, config=config, dsn=dsn, findings=list(findings))


def resolve_table(snapshot: Snapshot, name: str) -> Table:
    t = snapshot.table(name)
    if t is None:
        candidates = [x.qualified for x in snapshot.tables if x.name == name]
        if len(candidates) > 1:
            raise DbguardError(f"table name {name!r} is ambiguous: {', '.join(sorted(candidates))} (use schema.table)")
        raise NotFoundError(f"table not found: {name!r} (in {snapshot.database}; use schema.table)")
    if t.kind == "partition":
        raise DbguardError(
            f"{qname(t.schema, t.name)} is a partition of {t.parent}: run the action on the partitioned table"
        )
    return t


def why(findings: Sequence[Finding]) -> list[str]:
    return [f"{f.rule} ({f.severity.value}) {f.cache_key}: {f.message}" for f in findings]


def new_migration(ctx: Context, action: str, table: Table) -> Migration:
    return Migration(
        action=action,
        schema=table.schema,
        table=table.name,
        lock_timeout_ms=ctx.config.lock_timeout_ms,
        statement_timeout_ms=ctx.config.statement_timeout_ms,
        notes=list(ctx.notes),
    )


# --------------------------------------------------------------------------- names
def relation_names(snapshot: Snapshot, schema: str) -> set[str]:
    """Names taken in the schema's relation namespace (tables, indexes, index-backed constraints, views)."""
    names = set()
    for t in snapshot.tables:
        if t.schema == schema:
            names.add(t.name)
            names.update(i.name for i in t.indexes)
            names.update(c.name for c in t.constraints if c.kind in ("primary_key", "unique", "exclusion"))
    names.update(v.name for v in snapshot.views if v.schema == schema)
    return names


def constraint_names(table: Table) -> set[str]:
    return {c.name for c in table.constraints}


def unique_name(taken: set[str], base: str, suffix: str, salt: str) -> str:
    name = pg_name(base, suffix)
    if name not in taken:
        return name
    digest = hashlib.sha256(salt.encode("utf-8")).hexdigest()[:6]
    name = pg_name(f"{base}_{digest}", suffix)
    if name in taken:
        raise DbguardError(f"cannot find a free name for {base}_{suffix}")
    return name


# --------------------------------------------------------------------------- roles and policies
def check_role(ctx: Context) -> str:
    role = ctx.config.tenant.app_role
    if ctx.snapshot.roles and ctx.snapshot.role(role) is None and role != "public":
        raise DbguardError(
            f"the application role {role!r} (config tenant.app_role) does not exist in {ctx.snapshot.database}"
        )
    return role


def create_policy(schema: str, table: str, p: Policy) -> str:
    parts = [
        f"CREATE POLICY {quoted(p.name)} ON {quoted_qname(schema, table)}",
        f"    AS {'PERMISSIVE' if p.permissive else 'RESTRICTIVE'} FOR {p.command.upper()}",
        f"    TO {', '.join(role_name(r) for r in p.roles)}",
    ]
    if p.using is not None:
        parts.append(f"    USING ({p.using})")
    if p.with_check is not None:
        parts.append(f"    WITH CHECK ({p.with_check})")
    return "\n".join(parts)


def drop_policy(schema: str, table: str, name: str) -> str:
    return f"DROP POLICY IF EXISTS {quoted(name)} ON {quoted_qname(schema, table)}"


# --------------------------------------------------------------------------- data checks
def data_value(ctx: Context, query: sql.SQL | sql.Composed) -> Optional[int]:
    """One number from the database in a read-only session, or None without a DSN."""
    if not ctx.dsn:
        return None
    from dbguard_pipeline.pg.session import read_only_session

    with read_only_session(
        ctx.dsn, statement_timeout_ms=ctx.config.statement_timeout_ms, lock_timeout_ms=ctx.config.lock_timeout_ms
    ) as conn:
        # no parameters: values are embedded as literals, so a '%' in a hostile name is never a placeholder
        row = conn.execute(query).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
