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

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.actions import NothingToFix, build_context, replan
from dbguard_pipeline.fixes.ledger import apply_sql
from dbguard_pipeline.fixes.plan import Migration
from dbguard_pipeline.fixes.verdicts import Verdicts, measure
from dbguard_pipeline.fixes.verdicts import judge as judge_verdicts
from dbguard_pipeline.model.equality import comparable
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.scratch import scratch_database

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


def _check_one(dsn: str, m: Migration, config: Config, judge: bool = True) -> RoundTrip:
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
        trips = []
        tick("round trips: fixes", 0, len(migrations))
        for m in migrations:
            with muted():  # the audit and the probe each trip runs are part of this fix's step
                trips.append(_check_one(dsn, m, config, judge))
            tick("round trips: fixes", len(trips), len(migrations))
        return SandboxResult(used, trips)
