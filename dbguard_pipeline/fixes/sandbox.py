"""Round-trip test of generated migrations on a scratch copy of the target database.

The copy is ``CREATE DATABASE scratch TEMPLATE target`` on the same server (schema and data, so the backfill
and the VALIDATE steps run on real rows) when PostgreSQL allows it (nobody else connected to the target, and
the target is not too large); otherwise a schema-only copy made with ``pg_dump`` (pgserver's binaries) and
restored with ``psql``. For each migration: apply the forward file, check that the findings it fixes are gone
(and that planning the same action again finds nothing to do), judge what it does (:mod:`.verdicts`: no new
finding, no new probe leak, tenant A's own rows and commands as before), apply the rollback file, and compare
the snapshot with the one taken before, object for object. The scratch database is always dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.actions import NothingToFix, build_context, replan
from dbguard_pipeline.fixes.ledger import apply_sql
from dbguard_pipeline.fixes.plan import Migration
from dbguard_pipeline.fixes.verdicts import Verdicts, measure
from dbguard_pipeline.fixes.verdicts import judge as judge_verdicts
from dbguard_pipeline.model.equality import comparable
from dbguard_pipeline.model.schema import Snapshot, Table
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.scratch import scratch_database
from dbguard_pipeline.pg.session import connect

VOLATILE_SCHEMAS = ("dbguard",)  # the runner's ledger


# --------------------------------------------------------------------------- snapshot comparison
def signature(snapshot: Snapshot, exclude_schemas: Sequence[str] = VOLATILE_SCHEMAS) -> dict[str, Any]:
    """What must be identical before a migration and after its rollback (:func:`model.equality.comparable` with
    column positions kept), by kind and name so that :func:`differences` can say what differs."""
    s = comparable(snapshot, exclude_schemas, positions=True)
    return {
        "schemas": s.schemas,
        "tables": {t.qualified: t for t in s.tables},
        "views": {v.qualified: v for v in s.views},
        "functions": {(f.qualified, f.arguments): f for f in s.functions},
        "roles": {r.name: r for r in s.roles},
    }


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """Human-readable differences between two snapshots' signatures (empty when they are equal)."""
    a, b = signature(before), signature(after)
    out = []
    if a["schemas"] != b["schemas"]:
        out.append(f"schemas: {sorted(set(a['schemas']) ^ set(b['schemas']))}")
    for kind in ("tables", "views", "functions", "roles"):
        for key in sorted(set(a[kind]) | set(b[kind]), key=str):
            x, y = a[kind].get(key), b[kind].get(key)
            if x == y:
                continue
            if x is None or y is None:
                out.append(f"{kind[:-1]} {key}: {'added' if x is None else 'removed'}")
                continue
            for f in dataclasses.fields(x):
                if getattr(x, f.name) != getattr(y, f.name):
                    xv, yv = getattr(x, f.name), getattr(y, f.name)
                    if isinstance(xv, tuple) and isinstance(yv, tuple):
                        gone = [getattr(i, "name", i) for i in xv if i not in yv]
                        new = [getattr(i, "name", i) for i in yv if i not in xv]
                        out.append(f"{kind[:-1]} {key}: {f.name}: before only {gone}, after only {new}")
                    else:
                        out.append(f"{kind[:-1]} {key}: {f.name}: {xv!r} -> {yv!r}")
    return out


# --------------------------------------------------------------------------- the round trip
@dataclass
class RoundTrip:
    action: str
    table: str
    applied: bool = False
    findings_gone: bool = False
    remaining: list[str] = field(default_factory=list)
    rolled_back: bool = False
    restored: bool = False
    differences: list[str] = field(default_factory=list)
    error: Optional[str] = None
    verdicts: Optional[Verdicts] = None  # what the fix does: audit, probe, own access (None: not measured)

    @property
    def ok(self) -> bool:
        return (
            self.applied
            and self.findings_gone
            and self.rolled_back
            and self.restored
            and not self.error
            and (self.verdicts is None or self.verdicts.ok)
        )

    def reason(self) -> str:
        """Why the migration failed, on one line ("" when it passed)."""
        if self.ok:
            return ""
        if self.error:
            return self.error
        problems = []
        if not self.findings_gone:
            problems.append(f"still found after applying: {', '.join(self.remaining) or 'the action has work left'}")
        if not self.restored:
            problems.append(f"rollback differs: {'; '.join(self.differences[:3])}")
        if self.verdicts is not None and not self.verdicts.ok:
            problems += [line for line in self.verdicts.lines() if ": FAIL" in line]
        return "; ".join(problems)

    def line(self) -> str:
        if self.ok:
            return f"{self.action} {self.table}: applied, finding gone, rolled back, snapshot identical"
        return f"{self.action} {self.table}: FAILED: {self.reason()}"


@dataclass
class SandboxResult:
    method: str
    trips: list[RoundTrip]

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.trips)

    def summary(self) -> str:
        good = sum(t.ok for t in self.trips)
        return f"round trip on a scratch copy ({self.method}): {good}/{len(self.trips)} ok"


SAMPLED_ACTIONS = ("add-tenant-isolation",)  # fixes whose cost grows with the table's rows (the backfill)


def _sample(dsn: str, migrations: Sequence[Migration], config: Config) -> dict[str, str]:
    """Trim, in the scratch copy, each large table a backfilling migration fills to its first
    ``config.round_trip_row_limit`` rows by primary key (every parent row stays: the copy is a template copy).
    Returns table -> what was done, for the headers and the verdicts (a table left whole says why)."""
    limit = config.round_trip_row_limit
    notes: dict[str, str] = {}
    if limit <= 0:
        return notes
    snapshot = introspect(dsn)
    for m in migrations:
        table = snapshot.table(m.qualified)
        if m.action not in SAMPLED_ACTIONS or table is None or m.qualified in notes:
            continue
        try:
            notes.update(_trim(dsn, snapshot, table, limit))
        except psycopg.Error as exc:
            notes[m.qualified] = f"whole copy of {m.qualified} (could not sample it: {exc.diag.message_primary or exc})"
    return {k: v for k, v in notes.items() if v}


def _trim(dsn: str, snapshot: Snapshot, table: Table, limit: int) -> dict[str, str]:
    ident = sql.Identifier(table.schema, table.name)
    with connect(dsn, autocommit=True) as conn:
        total = conn.execute(
            sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {}) s").format(ident, sql.Literal(limit + 1))
        ).fetchone()
        if total is None or total[0] <= limit:
            return {}
        estimate = max(table.row_estimate, 0)
        if table.kind == "partitioned":
            estimate = sum(max(t.row_estimate, 0) for t in snapshot.tables if t.parent == table.qualified)
        if estimate <= limit:  # never analysed: count them (one scan, far cheaper than the backfill it spares)
            estimate = int((conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone() or [0])[0])
        pk = table.primary_key.columns if table.primary_key else ()
        order = sql.SQL(", ").join(sql.Identifier(c) for c in pk) if pk else sql.SQL("ctid")
        cols = [c.name for c in table.columns if not c.generated]
        col_list = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
        referenced = any(
            fk.ref_schema == table.schema and fk.ref_table == table.name and t.qualified != table.qualified
            for t in snapshot.tables
            for fk in t.foreign_keys
        )
        superuser = bool(
            (conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() or [0])[0]
        )
        with conn.transaction():
            if superuser:  # the kept rows were valid: no user trigger, no foreign-key check on the way back
                conn.execute("SET LOCAL session_replication_role = replica")
            if referenced:
                # rows of other tables point at it: delete past the last kept key (their rows stay; some dangle
                # in the copy, which the static audit and the probe of this table do not read)
                if not pk:
                    return {
                        table.qualified: f"whole copy of {table.qualified} (referenced, and no primary key to cut at)"
                    }
                keys = sql.SQL(", ").join(sql.Identifier(c) for c in pk)
                last = conn.execute(
                    sql.SQL("SELECT {k} FROM {t} ORDER BY {k} OFFSET {n} LIMIT 1").format(
                        k=keys, t=ident, n=sql.Literal(limit - 1)
                    )
                ).fetchone()
                assert last is not None  # the table has more than ``limit`` rows
                conn.execute(
                    sql.SQL("DELETE FROM {t} WHERE ({k}) > ({v})").format(
                        t=ident, k=keys, v=sql.SQL(", ").join(sql.Literal(v) for v in last)
                    )
                )
            else:
                conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE dbguard_sample ON COMMIT DROP AS SELECT {c} FROM {t} ORDER BY {o} LIMIT {n}"
                    ).format(c=col_list, t=ident, o=order, n=sql.Literal(limit))
                )
                conn.execute(sql.SQL("TRUNCATE {}").format(ident))
                overriding = any(c.identity == "always" for c in table.columns if c.name in cols)
                conn.execute(
                    sql.SQL("INSERT INTO {t} ({c}) {o}SELECT {c} FROM dbguard_sample").format(
                        t=ident, c=col_list, o=sql.SQL("OVERRIDING SYSTEM VALUE " if overriding else "")
                    )
                )
        conn.execute(sql.SQL("ANALYZE {}").format(ident))
    about = f"about {estimate:,}"
    return {
        table.qualified: f"{table.qualified} sampled: {about} rows, above round_trip_row_limit {limit:,}; the "
        f"scratch copy kept its first {limit:,} by {', '.join(pk) if pk else 'physical order'} (every parent row "
        "is there), so the backfill and the verdicts were measured on those rows, not on the whole table"
    }


def _check_one(dsn: str, m: Migration, config: Config, judge: bool = True, copy_note: str = "") -> RoundTrip:
    trip = RoundTrip(m.action, m.qualified)
    before = introspect(dsn)
    measured = None
    try:
        if judge:
            measured = measure(dsn, config, before, [m.qualified])
        apply_sql(dsn, m.render_forward(), source=f"{m.action} {m.qualified}")
        trip.applied = True
        after = introspect(dsn)
        ctx = build_context(after, config, dsn)
        left = {f.cache_key for f in ctx.findings} & set(m.fixes)
        trip.remaining = sorted(left)
        try:
            replan(ctx, m)
            work_left = True
        except NothingToFix:
            work_left = False
        trip.findings_gone = not left and not work_left
        if measured is not None:
            v = judge_verdicts(measured, measure(dsn, config, after, [m.qualified], measured.tenants))
            v.copy_note = copy_note
            trip.verdicts = v
    except DbguardError as exc:
        trip.error = str(exc)
    try:
        apply_sql(dsn, m.render_rollback(), source=f"rollback of {m.action} {m.qualified}")
        trip.rolled_back = True
        trip.differences = differences(before, introspect(dsn))
        trip.restored = not trip.differences
    except DbguardError as exc:
        trip.error = (trip.error + "; " if trip.error else "") + str(exc)
    if trip.verdicts is not None:
        m.verdicts = trip.verdicts.lines()
    if not trip.ok:
        m.rejected = trip.reason()
    return trip


def round_trip(
    target_dsn: str, migrations: Sequence[Migration], config: Config, method: str = "auto", judge: bool = True
) -> SandboxResult:
    """Apply, check and roll back each migration on one scratch copy of the target (each starts from the
    state the previous rollback restored, so no migration depends on another). ``judge``: also measure what
    each fix does (:mod:`.verdicts`) and record the verdicts (and a failure's reason) on the migration."""
    from dbguard_pipeline.progress import muted, tick

    with scratch_database(target_dsn, method) as (dsn, used):
        sampled = _sample(dsn, migrations, config) if used == "template" else {}
        note = "; ".join(sampled.values())
        for m in migrations:
            if note and note not in m.notes:
                m.notes.append(f"round trip copy: {note}")
        trips = []
        tick("round trips: fixes", 0, len(migrations))
        for m in migrations:
            with muted():  # the audit and the probe each trip runs are part of this fix's step
                trips.append(_check_one(dsn, m, config, judge, note))
            tick("round trips: fixes", len(trips), len(migrations))
        return SandboxResult(used, trips)
