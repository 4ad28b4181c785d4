"""Applying approved migrations to the live database: back up, apply, verify, roll back on regression.

For each pending migration, in file order (``dbguard fix`` and the ``apply_approved_migrations`` job both call
:func:`apply_approved`):

1. it must have a valid approval record (:mod:`.approvals`: the checksums of its forward and rollback file),
   a rollback file, no REJECTED header, no half-applied ledger row, and no earlier attempt of the same text that
   was rolled back on regression; the first pending migration that fails one of these stops the run there (the
   runner refuses out-of-order files, so a later one cannot go first);
2. backup (:func:`dbguard_pipeline.backup.take`) of the tables the file touches, when it changes data (or always,
   ``backup: all``); tables the file cannot name (a ``DO`` block or ``CALL`` alone) mean the whole database;
3. measure before (:func:`.verdicts.measure`: the whole static audit, the isolation probe of the touched tables,
   tenant A's own access), apply with the :class:`~.ledger.Runner` (ledger, steps, its own undo on failure),
   measure after, and judge with :func:`.verdicts.judge`, the judgment the round trip on the scratch copy uses;
4. when anything got worse (or could not be measured): the migration's rollback, then, when the rows of the
   backed-up tables differ from the manifest's checksums, an in-place verified restore of the backup; an alert
   through :mod:`dbguard_pipeline.alerts`; the run stops.

When the verification could not run (a killed backend), it is undone the same way and recorded ``failed``
(nothing was judged worse: the next run tries again). A restore that fails (refused, killed, or failing its
verification) is one transaction and changes nothing: ``rollback_failed``, a person must look.

Each attempt is a row of ``dbguard.fix_outcomes`` (:mod:`.outcomes`), started before the backup and finished
after the apply, so a failed backup is reported by the next run too. No Dagster here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import psycopg

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes import approvals, outcomes
from dbguard_pipeline.fixes.approvals import Approval
from dbguard_pipeline.fixes.ledger import MigrationFile, Runner, discover, read_ledger
from dbguard_pipeline.fixes.outcomes import OutcomeRow
from dbguard_pipeline.fixes.plan import read_fixes
from dbguard_pipeline.fixes.verdicts import Verdicts
from dbguard_pipeline.text import escape_controls

Log = Callable[[str], None]
BACKUP_MODES = ("data", "all", "none")
BAD = ("rolled_back_on_regression", "rollback_failed", "failed")
_DATA_KINDS = {
    "InsertStmt",
    "UpdateStmt",
    "DeleteStmt",
    "MergeStmt",
    "TruncateStmt",
    "CopyStmt",
    "DoStmt",
    "CallStmt",
}
_DATA_ALTERS = {"AT_DropColumn", "AT_AlterColumnType"}


# --------------------------------------------------------------------------- what a file touches
@dataclass(frozen=True)
class Scope:
    tables: tuple[str, ...]  # schema.name (unqualified names read as public), in order of appearance
    changes_data: bool  # DML, DO/CALL, a function called by a SELECT, DROP TABLE/COLUMN, a column type change
    opaque: bool  # a DO block or CALL: tables may be touched that the file does not name

    def describe(self) -> str:
        what = "changes data" if self.changes_data else "schema only"
        return f"{what}; tables: {', '.join(self.tables) or 'none named'}"


def _walk(node: Any, found: list[tuple[str, str]], kinds: set[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("relname"), str) and "relpersistence" in node:  # a RangeVar (tagged or not)
            found.append((node.get("schemaname") or "public", node["relname"]))
        for key, value in node.items():
            kinds.add(key)
            if key == "AlterTableCmd" and isinstance(value, dict) and value.get("subtype") in _DATA_ALTERS:
                kinds.add("DataAlter")
            if key == "DropStmt" and isinstance(value, dict) and value.get("removeType") == "OBJECT_TABLE":
                kinds.add("DropTable")
                for obj in value.get("objects") or []:
                    parts = [i.get("String", {}).get("sval") for i in (obj.get("List", {}).get("items") or [])]
                    parts = [p for p in parts if p]
                    if parts:
                        found.append((parts[-2] if len(parts) > 1 else "public", parts[-1]))
            _walk(value, found, kinds)
    elif isinstance(node, list):
        for item in node:
            _walk(item, found, kinds)


def scope(text: str, source: str = "migration") -> Scope:
    """The tables a migration names and whether it changes rows (PostgreSQL's own parser, via pglast)."""
    import json

    import pglast

    try:
        tree = json.loads(pglast.parser.parse_sql_json(text))
    except pglast.parser.ParseError as exc:
        raise DbguardError(f"{source} cannot be parsed: {exc}") from None
    found: list[tuple[str, str]] = []
    kinds: set[str] = set()
    selects_call = False
    for raw in tree.get("stmts") or []:
        stmt = raw.get("stmt") or {}
        mine: set[str] = set()
        _walk(stmt, found, mine)
        # a top-level SELECT that calls a function may write anything (a policy's subquery does not count)
        selects_call = selects_call or ("SelectStmt" in stmt and "FuncCall" in mine)
        kinds |= mine
    tables: list[str] = []
    for s, n in found:
        q = f"{s}.{n}"
        if q not in tables:
            tables.append(q)
    changes = bool(kinds & _DATA_KINDS) or "DataAlter" in kinds or "DropTable" in kinds or selects_call
    opaque = bool(kinds & {"DoStmt", "CallStmt"}) or selects_call
    return Scope(tuple(tables), changes, opaque)


# --------------------------------------------------------------------------- pending migrations
@dataclass
class Pending:
    file: MigrationFile
    fixes: list[str]
    verdicts: list[str]  # the round trip's verdict lines from the header
    summary: list[str]  # the header's What/Why lines
    rejected: Optional[str]
    approval: Optional[Approval]
    not_approved: str  # why there is no valid approval ("" when there is)
    half_applied: str  # the ledger's half-applied detail ("" when not started)
    last: Optional[OutcomeRow]
    scope: Optional[Scope]
    scope_error: str = ""

    @property
    def name(self) -> str:
        return self.file.name

    def blocker(self) -> str:
        """Why this migration cannot be applied now ("" when it can)."""
        if self.half_applied:
            return f"{self.half_applied}: finish or undo it with dbguard migrate up / rollback {self.name} first"
        if self.rejected:
            return f"rejected by the round trip ({self.rejected})"
        if self.scope_error:
            return self.scope_error
        if self.file.rollback_path is None:
            return "it has no rollback file (dbguard fix undoes a regression with it)"
        last = self.last
        undone = last is not None and last.outcome in ("rolled_back_on_regression", "rollback_failed")
        if last is not None and undone and self.file.matches(last.checksum):
            return (
                f"this text was {last.outcome.replace('_', ' ')} on {last.started_at:%Y-%m-%d %H:%M %Z} (see its "
                "last attempt); change the file (and approve it again) before it is tried again"
            )
        if self.not_approved:
            return self.not_approved
        return ""


def _header(text: str) -> tuple[list[str], list[str]]:
    summary, verdicts, in_verdicts = [], [], False
    for line in text.splitlines():
        if not line.startswith("--"):
            if line.strip():
                break
            continue
        body = line[2:].rstrip()
        if body.startswith(" Verdicts of the round trip"):
            in_verdicts = True
            continue
        if in_verdicts and body.startswith("   "):
            verdicts.append(body.strip())
            continue
        in_verdicts = False
        if body.startswith(("   - ", " What:", " Why:")):
            summary.append(body.strip())
    return summary, verdicts


def list_pending(dsn: str, directory: str | Path) -> list[Pending]:
    """Every migration of the folder that the ledger does not list as applied (never started, half-applied or
    rolled back), in order, with its approval, header, scope and last attempt."""
    from dbguard_pipeline.pg.session import connect

    files = discover(directory)
    with connect(dsn, autocommit=True) as conn:
        ledger = read_ledger(conn)
        last = outcomes.latest(conn)
    out = []
    for f in files:
        row = ledger.get(f.name)
        if row is not None and row.applied:
            continue
        text = f.text()
        summary, verdicts = _header(text)
        approval, why = approvals.check(directory, f)
        try:
            sc, sc_error = scope(text, f.path.name), ""
        except DbguardError as exc:
            sc, sc_error = None, str(exc)
        half = ""
        if row is not None and row.partial:
            half = f"half-applied at step {row.steps_done} of {row.steps_total}"
        out.append(
            Pending(
                f,
                read_fixes(text),
                verdicts,
                summary,
                approvals.rejected_reason(f),
                approval,
                why,
                half,
                last.get(f.name),
                sc,
                sc_error,
            )
        )
    return out


# --------------------------------------------------------------------------- outcomes
@dataclass
class Outcome:
    name: str
    outcome: str  # applied+verified | rolled_back_on_regression | rollback_failed | failed | skipped | would apply
    reason: str = ""
    backup: Optional[str] = None
    data_restored: Optional[bool] = None
    verdicts: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # backup, before, apply, verify, rollback, restore
    alerts: list[str] = field(default_factory=list)

    @property
    def bad(self) -> bool:
        return self.outcome in BAD

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    def line(self) -> str:
        times = ", ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items())
        out = f"{self.outcome:<26} {self.name}"
        if self.reason:
            out += f": {self.reason}"
        if times:
            out += f" [{times}]"
        return escape_controls(out)


@dataclass
class ApplyRun:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def bad(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.bad]

    @property
    def applied(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.outcome == "applied+verified"]


@dataclass
class Options:
    backup_dir: Path
    backup: str = "data"  # data | all | none
    dry_run: bool = False
    via: str = "dbguard fix"
    log: Log = field(default=lambda _line: None)
    alert: bool = True


def apply_approved(dsn: str, config: Config, directory: str | Path, opts: Options) -> ApplyRun:
    """Apply every approved pending migration in order, each backed up, verified and undone on regression.
    The run stops at the first migration that cannot be applied (the others wait) or that went wrong."""
    if opts.backup not in BACKUP_MODES:
        raise DbguardError(f"backup must be one of {', '.join(BACKUP_MODES)}, not {opts.backup!r}")
    run = ApplyRun()
    stop: Optional[str] = None
    for p in list_pending(dsn, directory):
        if stop is not None:
            run.outcomes.append(Outcome(p.name, "skipped", stop))
            continue
        why = p.blocker()
        if why:
            run.outcomes.append(Outcome(p.name, "skipped", why))
            stop = f"waits for {p.name} (migrations apply in file order)"
            continue
        if opts.dry_run:
            assert p.scope is not None
            backup = opts.backup == "all" or (opts.backup == "data" and p.scope.changes_data)
            run.outcomes.append(
                Outcome(
                    p.name,
                    "would apply",
                    f"{'back up, ' if backup else ''}apply, verify ({p.scope.describe()})",
                )
            )
            continue
        outcome = _apply_one(dsn, config, directory, p, opts)
        run.outcomes.append(outcome)
        if outcome.bad:
            stop = f"not attempted: {p.name} ended {outcome.outcome}"
    return run


def _some(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def worse(v: Verdicts) -> str:
    """What got worse, on one short line (the full verdicts are recorded with the outcome)."""
    parts = []
    if v.audit_new:
        parts.append(f"new findings: {_some(v.audit_new)}")
    if v.new_leaks:
        parts.append(f"new leaks: {_some(v.new_leaks)}")
    if v.lost:
        parts.append(f"access lost: {_some(v.lost)}")
    if v.widened:
        parts.append(f"access widened: {_some(v.widened)}")
    return "; ".join(parts)


def _tables_for_backup(snapshot: Any, p: Pending) -> Optional[list[tuple[str, str]]]:
    """(schema, name) of the existing tables the file names; None: the whole database."""
    assert p.scope is not None
    named = [t for t in (snapshot.table(q) for q in p.scope.tables) if t is not None]
    if p.scope.opaque and not named:
        return None
    return [(t.schema, t.name) for t in named] or None


def _apply_one(dsn: str, config: Config, directory: str | Path, p: Pending, opts: Options) -> Outcome:
    from dbguard_pipeline import backup as backups
    from dbguard_pipeline.fixes.verdicts import judge, measure
    from dbguard_pipeline.pg.catalog import introspect
    from dbguard_pipeline.pg.session import connect

    assert p.scope is not None and p.approval is not None
    out = Outcome(p.name, "failed")
    log = opts.log
    with connect(dsn, autocommit=True, application_name="dbguard fix") as conn:
        outcomes.ensure(conn)

        def step(name: str, t0: float) -> None:
            out.seconds[name] = out.seconds.get(name, 0.0) + time.perf_counter() - t0

        t0 = time.perf_counter()
        before_snapshot = introspect(dsn)
        tables = [q for q in p.scope.tables if before_snapshot.table(q) is not None]
        step("before", t0)
        # the attempt is recorded before anything else, so a backup that fails is reported by the next run too
        try:
            row_id = outcomes.start(conn, p.name, p.file.checksum, p.approval.by, p.approval.at, None, opts.via)
        except psycopg.Error as exc:
            out.reason = f"cannot record the attempt in {outcomes.TABLE}, nothing was applied: {_message(exc)}"
            return out

        def finish(outcome: str, reason: str = "") -> Outcome:
            out.outcome, out.reason = outcome, reason
            verdicts = " | ".join(out.verdicts)
            try:
                outcomes.finish(conn, row_id, outcome, reason, verdicts, out.data_restored)
            except psycopg.Error:  # the connection broke meanwhile (a restart): once more on a new one
                try:
                    with connect(dsn, autocommit=True, application_name="dbguard fix") as again:
                        outcomes.finish(again, row_id, outcome, reason, verdicts, out.data_restored)
                except (psycopg.Error, DbguardError) as exc:
                    out.reason += f" (the outcome could not be recorded in {outcomes.TABLE}: {_message(exc)})"
            if outcome in BAD and opts.alert:
                out.alerts = _alert(dsn, config, opts.via, p.name, outcome, reason)
            return out

        t0 = time.perf_counter()
        bk = None
        if opts.backup == "all" or (opts.backup == "data" and p.scope.changes_data):
            which = _tables_for_backup(before_snapshot, p)
            log(f"{p.name}: backing up {'the whole database' if which is None else ', '.join(tables)}")
            try:
                bk = backups.take(dsn, which, out_dir=opts.backup_dir, label=p.name[:40], log=log)
            except (DbguardError, psycopg.Error, OSError) as exc:
                step("backup", t0)
                return finish("failed", f"the backup failed, nothing was applied: {_message(exc)}")
            out.backup = str(bk.path)
            log(bk.summary())
            step("backup", t0)
            try:
                outcomes.set_backup(conn, row_id, out.backup)
            except psycopg.Error as exc:
                return finish(
                    "failed", f"cannot record the backup in {outcomes.TABLE}, nothing was applied: {_message(exc)}"
                )

        t0 = time.perf_counter()
        try:
            before = measure(dsn, config, before_snapshot, tables)
        except (DbguardError, psycopg.Error) as exc:
            step("before", t0)
            return finish("failed", f"could not measure before applying, nothing was applied: {_message(exc)}")
        step("before", t0)

        t0 = time.perf_counter()
        runner = Runner(dsn, directory, log=log)
        try:
            applied = runner.up(only={p.name})
        except DbguardError as exc:
            step("apply", t0)
            return finish("failed", str(exc))
        step("apply", t0)
        if not applied:  # another run applied it between the listing and the runner's lock
            outcomes.forget(conn, row_id)
            out.outcome, out.reason = "skipped", "applied meanwhile by another run"
            return out

        t0 = time.perf_counter()
        problem, unverified = "", False
        try:
            after_snapshot = introspect(dsn)
            # the tables it created count too: a new table that leaks is worse
            after_tables = [q for q in p.scope.tables if after_snapshot.table(q) is not None]
            verdicts = judge(before, measure(dsn, config, after_snapshot, after_tables, before.tenants))
            out.verdicts = verdicts.lines()
            if not verdicts.ok:
                problem = worse(verdicts)
        except (DbguardError, psycopg.Error) as exc:
            problem, unverified = f"could not verify after applying ({_message(exc)})", True
        step("verify", t0)
        if not problem:
            log(f"{p.name}: applied and verified")
            return finish("applied+verified")

        log(f"{p.name}: {'' if unverified else 'worse after applying: '}{problem}: rolling back")
        t0 = time.perf_counter()
        try:
            runner.rollback(p.name)
        except DbguardError as exc:
            step("rollback", t0)
            return finish("rollback_failed", f"{problem}; the rollback failed: {exc}")
        step("rollback", t0)
        undone = f"{problem}; rolled back"
        if bk is not None:
            t0 = time.perf_counter()
            left = f"the rows of {', '.join(tables) or 'the backed-up tables'} are as the migration and its rollback left them (not restored)"
            try:
                checks = backups.compare(bk.path, dsn)
                if all(c.ok for c in checks):
                    out.data_restored = False
                    undone += " (rows identical to the backup, no restore needed)"
                else:
                    log(f"{p.name}: the rollback did not return the rows: restoring {bk.path.name}")
                    result = backups.restore(bk.path, dsn, verify=True, log=log)
                    if not (result.committed and result.ok):
                        step("restore", t0)
                        out.data_restored = False
                        differ = _some([c.line() for c in result.checks if not c.ok])
                        return finish(
                            "rollback_failed",
                            f"{undone}, but the restore of {bk.path.name} failed its verification and was rolled "
                            f"back ({differ or 'not committed'}): {left}; a person must look",
                        )
                    out.data_restored = True
                    undone += f", data restored from {bk.path.name} (checksums equal to the backup)"
            except DbguardError as exc:
                step("restore", t0)
                out.data_restored = False
                return finish(
                    "rollback_failed",
                    f"{undone}, but restoring the data from {bk.path.name} failed ({_message(exc)}): {left}; "
                    "a person must look",
                )
            step("restore", t0)
        if unverified:  # nothing was judged worse: the next run may try again (the approval holds)
            return finish("failed", f"{undone}: the database is as it was before")
        return finish("rolled_back_on_regression", undone)


def _message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    return " ".join(str(getattr(diag, "message_primary", None) or exc).split())


def _alert(dsn: str, config: Config, via: str, name: str, outcome: str, reason: str) -> list[str]:
    from dbguard_pipeline.alerts import Alert, deliver
    from dbguard_pipeline.pg.dsn import describe_dsn

    where = describe_dsn(dsn)
    alert = Alert(
        database=where,
        job=via,
        run_id="",
        run_url="",
        errors=(f"{name}: {outcome}: {reason}",),
        headline=f"dbguard: {name} {outcome.replace('_', ' ')} on {where}",
    )
    return [f"{d.channel}: {'sent' if d.ok else 'FAILED ' + d.detail}" for d in deliver(alert, config.alerts)]
