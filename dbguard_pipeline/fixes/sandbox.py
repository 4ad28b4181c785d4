"""Round-trip test of generated migrations on a scratch copy of the target database.

The copy is ``CREATE DATABASE scratch TEMPLATE target`` on the same server (schema and data, so the backfill
and the VALIDATE steps run on real rows) when PostgreSQL allows it (nobody else connected to the target, and
the target is not too large); otherwise a schema-only copy made with ``pg_dump`` (pgserver's binaries) and
restored with ``psql``. For each migration: apply the forward file, check that the findings it fixes are gone
(and that planning the same action again finds nothing to do), apply the rollback file, and compare the
snapshot with the one taken before, object for object. The scratch database is always dropped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.actions import NothingToFix, build_context, replan
from dbguard_pipeline.fixes.ledger import apply_sql
from dbguard_pipeline.fixes.plan import Migration
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.dsn import database_name, describe_dsn, parse_dsn, with_database
from dbguard_pipeline.pg.session import connect

TEMPLATE_SIZE_LIMIT = 1 << 30  # above 1 GiB, copy the schema only
VOLATILE_SCHEMAS = ("dbguard",)  # the runner's ledger


# --------------------------------------------------------------------------- snapshot comparison
def signature(snapshot: Snapshot, exclude_schemas: Sequence[str] = VOLATILE_SCHEMAS) -> dict[str, Any]:
    """What must be identical before a migration and after its rollback: every table (columns, constraints,
    indexes, policies, grants, RLS flags, owner, comment), view, function and role; not the time the snapshot
    was taken, not the planner's row estimates, not dbguard's own ledger schema."""
    skip = set(exclude_schemas)
    return {
        "schemas": tuple(s for s in snapshot.schemas if s not in skip),
        "tables": {t.qualified: dataclasses.replace(t, row_estimate=0) for t in snapshot.tables if t.schema not in skip},
        "views": {v.qualified: v for v in snapshot.views if v.schema not in skip},
        "functions": {(f.qualified, f.arguments): f for f in snapshot.functions if f.schema not in skip},
        "roles": {r.name: r for r in snapshot.roles},
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


# --------------------------------------------------------------------------- scratch database
def _binary(name: str) -> str:
    try:
        import pgserver

        p = Path(pgserver.__file__).parent / "pginstall" / "bin" / name
        if p.is_file():
            return str(p)
    except ImportError:
        pass
    import shutil

    found = shutil.which(name)
    if not found:
        raise DbguardError(f"{name} is not available for a schema-only copy")
    return found


def _libpq_env(dsn: str) -> dict[str, str]:
    """Environment for pg_dump/psql: the password travels in PGPASSWORD, never on a command line."""
    params = parse_dsn(dsn)
    env = dict(os.environ)
    mapping = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE",
               "sslmode": "PGSSLMODE", "password": "PGPASSWORD"}
    for k, v in params.items():
        if k in mapping:
            env[mapping[k]] = v
    return env


def _maintenance_dsn(dsn: str) -> str:
    target = database_name(dsn)
    for db in ("postgres", "template1"):
        if db != target:
            return with_database(dsn, db)
    return with_database(dsn, "template1")


@contextlib.contextmanager
def scratch_database(target_dsn: str, method: str = "auto") -> Iterator[tuple[str, str]]:
    """Yield (dsn, method) of a throwaway copy of the target; dropped on exit. method: auto|template|schema."""
    admin = _maintenance_dsn(target_dsn)
    source = database_name(target_dsn)
    name = f"dbguard_sandbox_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    used = None
    with connect(admin, autocommit=True) as conn:
        if method in ("auto", "template"):
            row = conn.execute("select pg_database_size(%s)", (source,)).fetchone()
            if method == "template" or (row is not None and row[0] <= TEMPLATE_SIZE_LIMIT):
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(source)))
                    used = "template"
                except psycopg.errors.InsufficientPrivilege:
                    raise DbguardError(f"cannot create a scratch database on {describe_dsn(target_dsn)}: "
                                       "the role lacks CREATEDB") from None
                except psycopg.Error as exc:
                    if method == "template":
                        raise DbguardError(f"cannot copy {source} as a template: {exc.diag.message_primary}") from None
        if used is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.InsufficientPrivilege:
                raise DbguardError(f"cannot create a scratch database on {describe_dsn(target_dsn)}: "
                                   "the role lacks CREATEDB") from None
            used = "schema-only"
    scratch = with_database(target_dsn, name)
    try:
        if used == "schema-only":
            _copy_schema(target_dsn, scratch)
        yield scratch, used
    finally:
        with connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _copy_schema(source_dsn: str, target_dsn: str) -> None:
    dump = subprocess.run([_binary("pg_dump"), "--schema-only", "--no-comments"], env=_libpq_env(source_dsn),
                          capture_output=True, timeout=600)
    if dump.returncode != 0:
        raise DbguardError(f"pg_dump --schema-only failed: {_first_line(dump.stderr, source_dsn)}")
    load = subprocess.run([_binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=dump.stdout,
                          env=_libpq_env(target_dsn), capture_output=True, timeout=600)
    if load.returncode != 0:
        raise DbguardError(f"restoring the schema-only copy failed: {_first_line(load.stderr, target_dsn)}")


def _first_line(raw: bytes, dsn: str) -> str:
    from dbguard_pipeline.pg.dsn import mask_secrets

    text = raw.decode("utf-8", "replace").strip().splitlines()
    return mask_secrets(text[0] if text else "no output", dsn)


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

    @property
    def ok(self) -> bool:
        return self.applied and self.findings_gone and self.rolled_back and self.restored and not self.error

    def line(self) -> str:
        if self.ok:
            return f"{self.action} {self.table}: applied, finding gone, rolled back, snapshot identical"
        if self.error:
            return f"{self.action} {self.table}: FAILED: {self.error}"
        problems = []
        if not self.findings_gone:
            problems.append(f"still found after applying: {', '.join(self.remaining) or 'the action has work left'}")
        if not self.restored:
            problems.append(f"rollback differs: {'; '.join(self.differences[:3])}")
        return f"{self.action} {self.table}: FAILED: {'; '.join(problems)}"


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


def _check_one(dsn: str, m: Migration, config: Config) -> RoundTrip:
    trip = RoundTrip(m.action, m.qualified)
    before = introspect(dsn)
    try:
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
    except DbguardError as exc:
        trip.error = str(exc)
    try:
        apply_sql(dsn, m.render_rollback(), source=f"rollback of {m.action} {m.qualified}")
        trip.rolled_back = True
        trip.differences = differences(before, introspect(dsn))
        trip.restored = not trip.differences
    except DbguardError as exc:
        trip.error = (trip.error + "; " if trip.error else "") + str(exc)
    return trip


def round_trip(target_dsn: str, migrations: Sequence[Migration], config: Config, method: str = "auto") -> SandboxResult:
    """Apply, check and roll back each migration on one scratch copy of the target (each starts from the
    state the previous rollback restored)."""
    with scratch_database(target_dsn, method) as (dsn, used):
        return SandboxResult(used, [_check_one(dsn, m, config) for m in migrations])

