"""What a fix does, measured on the scratch copy before and after it is applied (three verdicts per migration).

- audit: the whole static audit after applying; any finding (cache key) that was not there before fails it.
- probe: the isolation probe on the migration's table (and its partitions) before and after; any leak
  (table, probe) that was not there before fails it.
- own access: as the application role with tenant A's context (the probe's session: the GUC, or the JWT with
  the tenant claim and A's user as ``sub``; with JWT tenancy also a JWT with only ``sub``, which is what a
  membership app sends), A's own rows: how many are visible, and whether INSERT (a copy of one of A's rows),
  UPDATE (``SET c = c``) and DELETE of them are allowed; every statement rolled back. A command allowed before
  and not after is access lost; one not allowed before and allowed after is a widened command. Under the configured
  context every loss counts, even on a table that leaked; under the sub-only JWT, when it saw tenant B's rows
  before, what it loses is not counted: that access went through the hole the fix closes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.text import qname

COMMANDS = ("insert", "update", "delete")
_USER_WORDS = ("user", "member", "profile", "account")  # what a membership table calls its user column


@dataclass
class Access:
    """Tenant A's access to its own rows of one table under one context."""

    visible: int = 0  # A's rows visible as the app
    others: int = 0  # B's rows visible as the app (the table leaked reads)
    allowed: dict[str, Optional[bool]] = field(default_factory=dict)  # command -> allowed (None: not tried)


@dataclass
class Verdicts:
    audit_new: list[str] = field(default_factory=list)
    audit_note: str = ""
    leaks_before: int = 0
    leaks_after: int = 0
    new_leaks: list[str] = field(default_factory=list)
    probe_note: str = ""
    lost: list[str] = field(default_factory=list)
    widened: list[str] = field(default_factory=list)
    access_note: str = ""
    copy_note: str = ""  # the round trip ran on a sampled copy of a large table: which, and how much

    @property
    def ok(self) -> bool:
        return not (self.audit_new or self.new_leaks or self.lost or self.widened)

    def lines(self) -> list[str]:
        audit = (
            f"FAIL: new findings {', '.join(self.audit_new)}"
            if self.audit_new
            else "ok: no finding that was not there before"
        ) + (f" ({self.audit_note})" if self.audit_note else "")
        probe = (
            f"FAIL: new leaks {', '.join(self.new_leaks)}"
            if self.new_leaks
            else f"ok: leaks {self.leaks_before} -> {self.leaks_after}, none new"
        )
        if self.probe_note:
            probe += f" ({self.probe_note})"
        if self.lost or self.widened:
            parts = ([f"lost {', '.join(self.lost)}"] if self.lost else []) + (
                [f"widened {', '.join(self.widened)}"] if self.widened else []
            )
            access = "FAIL: " + "; ".join(parts)
        else:
            access = "ok: own rows and commands as before"
        if self.access_note:
            access += f" ({self.access_note})"
        out = [f"audit: {audit}", f"probe: {probe}", f"own access: {access}"]
        return out + ([f"copy: {self.copy_note}"] if self.copy_note else [])


# --------------------------------------------------------------------------- measurements
def audit_keys(snapshot: Snapshot, config: Config) -> set[str]:
    from dbguard_pipeline.audit import split_ignored, static_findings

    findings, _ignored = split_ignored(static_findings(snapshot, config), config)
    return {f.cache_key for f in findings}


def probe_tables(snapshot: Snapshot, qualified: str) -> list[str]:
    """The migration's table and the partitions of it (the app may reach them directly)."""
    out = [qualified]
    out += [t.qualified for t in snapshot.tables if t.parent == qualified]
    return out


def leaks(dsn: str, config: Config, snapshot: Snapshot, tables: list[str]) -> tuple[set[str], str]:
    """{"table probe"} of every leak the probe finds on ``tables`` (those that hold tenant data)."""
    from dbguard_pipeline.probe import probe
    from dbguard_pipeline.probe.run import plan_targets

    known = {t.qualified for t in plan_targets(snapshot, config)}
    chosen = [t for t in tables if t in known]
    if not chosen:
        return set(), "not tenant data for the probe"
    report = probe(dsn, config, chosen, snapshot=snapshot)
    return {f"{qname(r.schema, r.table)} {r.probe}" for r in report.leaks}, ""


def _contexts(session: Any, tenant: str) -> list[tuple[str, Any]]:
    """(label, how to set it) for each context the check runs under."""
    out: list[tuple[str, Any]] = [("context", lambda: session.set_context(tenant))]
    if session.tm.context == "jwt" and session.jwt_sub:
        claims = json.dumps({"role": session.role, "sub": session.jwt_sub}, sort_keys=True)
        out.append(
            (
                "sub-only JWT",
                lambda: session.conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,)),
            )
        )
    return out


def own_access(
    dsn: str, config: Config, snapshot: Snapshot, qualified: str, tenants: Optional[tuple[str, str]] = None
) -> tuple[dict[str, Access], Optional[tuple[str, str]], str]:
    """Tenant A's access to its own rows of ``qualified`` as the app, per context; the tenants used."""
    from dbguard_pipeline.pg.session import connect
    from dbguard_pipeline.probe.report import Target
    from dbguard_pipeline.probe.rows import RowTenancy, insert_sql, table_id
    from dbguard_pipeline.probe.session import Session
    from dbguard_pipeline.probe.tenants import pick_tenants

    table = snapshot.table(qualified)
    if table is None:
        return {}, tenants, "table not found"
    rt = RowTenancy(snapshot, config)
    if rt.info(table) is None:
        return {}, tenants, "not tenant data"
    conn = connect(dsn, autocommit=True, application_name="dbguard fix check")
    try:
        session = Session(conn, config, snapshot.database)
        with conn.transaction(force_rollback=True):
            session.timeouts()
            session.preflight()
            chosen = pick_tenants(conn, rt, tenants, [Target(table.schema, table.name, "table", table=table)])
        a, b = chosen.a, chosen.b
        if chosen.missing:
            return {}, (a, b), "the tenants table has fewer than two tenants here (a schema-only copy?): not checked"
        session.jwt_sub = chosen.user_a
        if config.tenant.context == "jwt" and not session.jwt_sub:
            session.jwt_sub = _member_of(conn, snapshot, config, rt, a, b)
        out: dict[str, Access] = {}
        with conn.transaction(force_rollback=True):
            session.timeouts()
            mine, theirs = rt.names(table, a), rt.pred(table, b)  # two-party rows: A is a party / B is every party
            row = conn.execute(
                sql.SQL("SELECT * FROM {} AS t WHERE {} LIMIT 1").format(table_id(table), mine)
            ).fetchone()
            cols = [c for c in table.columns if not c.generated]
            names = [c.name for c in table.columns]
            values: Optional[dict[str, Any]] = (
                {c.name: sql.Literal(row[names.index(c.name)]) for c in cols} if row else None
            )
            upd = next((c.name for c in cols if c.identity is None), None)
            for label, set_ctx in _contexts(session, a):
                acc = Access()
                acc.visible = _count(
                    session, set_ctx, sql.SQL("SELECT count(*) FROM {} AS t WHERE {}").format(table_id(table), mine)
                )
                acc.others = _count(
                    session, set_ctx, sql.SQL("SELECT count(*) FROM {} AS t WHERE {}").format(table_id(table), theirs)
                )
                stmts = {
                    "insert": insert_sql(table, values) if values else None,
                    "update": sql.SQL("UPDATE {} AS t SET {} = t.{} WHERE {}").format(
                        table_id(table), sql.Identifier(upd), sql.Identifier(upd), mine
                    )
                    if upd and row
                    else None,
                    "delete": sql.SQL("DELETE FROM {} AS t WHERE {}").format(table_id(table), mine) if row else None,
                }
                for cmd, stmt in stmts.items():
                    acc.allowed[cmd] = None if stmt is None else _allowed(session, set_ctx, stmt)
                out[label] = acc
        return out, (a, b), ""
    except psycopg.Error as exc:
        raise DbguardError(
            f"own-access check on {qname(table.schema, table.name)} failed: {' '.join(str(exc).split())[:200]}"
        ) from None
    finally:
        conn.close()


def _member_of(conn: Any, snapshot: Snapshot, config: Config, rt: Any, a: str, b: str) -> Optional[str]:
    """A user of tenant A only, from a membership table keyed by (user, tenant) whose user column is a uuid
    (when the probe's own search, which follows foreign keys to a users table, finds none)."""
    from dbguard_pipeline.probe.rows import lit, table_id

    for t in sorted(snapshot.tables, key=lambda t: t.qualified):
        info = rt.info(t)
        pk = t.primary_key
        if info is None or not info.direct_column or pk is None or len(pk.columns) != 2:
            continue
        if info.direct_column not in pk.columns:
            continue
        user = next(c for c in pk.columns if c != info.direct_column)
        col = t.column(user)
        if col is None or col.type != "uuid" or not any(w in user.lower() for w in _USER_WORDS):
            continue
        row = conn.execute(
            sql.SQL(
                "SELECT m.{u}::text FROM {t} AS m WHERE m.{tc} = {a} AND NOT EXISTS (SELECT 1 FROM {t} AS o "
                "WHERE o.{u} = m.{u} AND o.{tc} = {b}) ORDER BY 1 LIMIT 1"
            ).format(
                u=sql.Identifier(user),
                t=table_id(t),
                tc=sql.Identifier(info.direct_column),
                a=lit(a, info.type),
                b=lit(b, info.type),
            )
        ).fetchone()
        if row:
            return str(row[0])
    return None


def _as_app(session: Any, set_ctx: Any) -> None:
    set_ctx()
    session.conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(session.role)))


def _count(session: Any, set_ctx: Any, stmt: sql.Composed) -> int:
    try:
        with session.conn.transaction(force_rollback=True):
            _as_app(session, set_ctx)
            row = session.conn.execute(stmt).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def _allowed(session: Any, set_ctx: Any, stmt: Any) -> bool:
    """The policy let the statement act on A's rows: rows affected, or an integrity error raised after the
    policy admitted the row (a copied key)."""
    try:
        with session.conn.transaction(force_rollback=True):
            _as_app(session, set_ctx)
            cur = session.conn.execute(stmt)
            return cur.rowcount > 0
    except psycopg.Error as exc:
        return bool(exc.sqlstate and exc.sqlstate.startswith("23"))


@dataclass
class Measurement:
    """One side of a before/after comparison: the whole static audit, the probe of the affected tables, and
    tenant A's own access per table (table -> context label -> Access)."""

    keys: set[str] = field(default_factory=set)
    leaks: set[str] = field(default_factory=set)
    probe_note: str = ""
    access: dict[str, dict[str, Access]] = field(default_factory=dict)
    tenants: Optional[tuple[str, str]] = None
    access_note: str = ""
    names: dict[str, str] = field(default_factory=dict)  # table key -> its name as people read it (quoted)


def measure(
    dsn: str, config: Config, snapshot: Snapshot, tables: list[str], tenants: Optional[tuple[str, str]] = None
) -> Measurement:
    """What the round trip (on a scratch copy) and the live verification after ``dbguard fix`` both measure,
    before and after a migration; ``tenants``: the pair the "before" measurement chose, so both sides compare
    the same tenants."""
    out = Measurement(keys=audit_keys(snapshot, config), tenants=tenants)
    reach: list[str] = []
    for t in tables:
        reach += [x for x in probe_tables(snapshot, t) if x not in reach]
    out.leaks, out.probe_note = leaks(dsn, config, snapshot, reach) if reach else (set(), "no table to probe")
    notes = []
    for t in tables:
        found = snapshot.table(t)
        out.names[t] = qname(found.schema, found.name) if found is not None else t
        access, out.tenants, note = own_access(dsn, config, snapshot, t, out.tenants)
        out.access[t] = access
        if note:
            notes.append(note if len(tables) == 1 else f"{out.names[t]}: {note}")
    out.access_note = "; ".join(notes)
    return out


def judge(before: Measurement, after: Measurement) -> Verdicts:
    """The three verdicts between two measurements (the one judgment of "did this migration make it worse")."""
    v = Verdicts(
        audit_new=sorted(after.keys - before.keys),
        leaks_before=len(before.leaks),
        leaks_after=len(after.leaks),
        new_leaks=sorted(after.leaks - before.leaks),
        probe_note=after.probe_note or before.probe_note,
        access_note=after.access_note or before.access_note,
    )
    many = len(before.access) > 1
    for table, acc in before.access.items():
        lost, widened = compare_access(acc, after.access.get(table, {}))
        shown = before.names.get(table, table)
        v.lost += [f"{shown} {x}" if many else x for x in lost]
        v.widened += [f"{shown} {x}" if many else x for x in widened]
    return v


def compare_access(before: dict[str, Access], after: dict[str, Access]) -> tuple[list[str], list[str]]:
    """(lost, widened) between two measurements."""
    lost: list[str] = []
    widened: list[str] = []
    for label, b in before.items():
        a = after.get(label)
        if a is None:
            continue
        tag = "" if label == "context" else f" ({label})"
        # the configured context is what the application sends: A's access under it must survive even when the
        # table leaked before; under another context, only access that did not go through the hole counts
        legit = label == "context" or b.others == 0
        if legit and a.visible < b.visible:
            lost.append(f"select{tag}: {b.visible} -> {a.visible} own rows")
        for cmd in COMMANDS:
            was, now = b.allowed.get(cmd), a.allowed.get(cmd)
            if was is None or now is None:
                continue
            if was and not now and legit:
                lost.append(f"{cmd}{tag}")
            if now and not was:
                widened.append(f"{cmd}{tag}")
    return lost, widened
