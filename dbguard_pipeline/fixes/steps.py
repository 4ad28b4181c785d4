"""Applying one migration file step by step, with its progress in the ledger, and cleaning up when a step
fails (see :mod:`dbguard_pipeline.fixes.ledger`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

import psycopg

from dbguard_pipeline.errors import MigrationError
from dbguard_pipeline.fixes import progress
from dbguard_pipeline.fixes.ledger import (
    ApplyResult,
    MigrationFile,
    UnitFailed,
    _execute,
    _interval,
    _pg_message,
    _run_units,
    read_text,
)
from dbguard_pipeline.fixes.units import Unit, parse_units

if TYPE_CHECKING:
    from dbguard_pipeline.fixes.ledger import Runner


class InvalidIndex(Exception):
    def __init__(self, names: set[tuple[str, str]]):
        super().__init__(", ".join(f"{s}.{n}" for s, n in sorted(names)))
        self.names = names


def apply_file(runner: Runner, f: MigrationFile, units: list[Unit], start: int) -> ApplyResult:
    started = time.monotonic()
    total = len(units)
    if start > total:
        raise MigrationError(
            f"{f.name}: the ledger says step {start} of {total} is done, but the file has {total} steps"
        )
    if start:
        runner.log(f"resuming {f.name} at step {start + 1} of {total}")
        # Session settings (SET lock_timeout ...) of the steps already done are lost with the old session.
        for i, unit in enumerate(units[:start]):
            if not unit.changes_schema:
                _step_or_fail(runner, f, units, i, start, started, replay=True)
    else:
        runner.log(f"applying {f.name} ({total} steps)")
    if total == 0:
        conn = runner._conn
        assert conn is not None  # Runner.up connects before it applies any file
        with conn.transaction():
            progress.record(conn, f.name, f.checksum, 0, 0, _interval(0))
    for i in range(start, total):
        _step_or_fail(runner, f, units, i, start, started)
    took = time.monotonic() - started
    runner.log(f"applied {f.name} in {took:.2f}s")
    return ApplyResult(f.name, "applied", took, total, start + 1 if start else 0)


def _step_or_fail(
    runner: Runner, f: MigrationFile, units: list[Unit], i: int, start: int, started: float, replay: bool = False
) -> None:
    conn = runner._conn
    assert conn is not None  # Runner.up connects before it applies any file; a failed step ends the run
    unit = units[i]
    total = len(units)

    def record(c: psycopg.Connection) -> None:
        progress.record(c, f.name, f.checksum, i + 1, total, _interval(time.monotonic() - started))

    before: set[tuple[str, str]] = set()
    try:
        if replay:
            _execute(conn, i, unit, runner.lock_retries)
            return
        if unit.transactional:
            _execute(conn, i, unit, runner.lock_retries, record)
            return
        if unit.index is not None:
            prepared = _prepare_index(conn, unit, resuming=(i == start and start > 0))
            if prepared is None:  # built by the crashed run, not yet recorded
                runner.log(f"step {i + 1}: index {unit.index.name} was built before the interruption")
                record(conn)
                return
            before = prepared
        _execute(conn, i, unit, runner.lock_retries)
        if unit.index is not None:
            bad = progress.invalid_indexes(conn, unit.index) - before
            if bad:
                progress.drop_indexes(conn, bad)
                raise UnitFailed(i, unit, InvalidIndex(bad))
        record(conn)
    except (psycopg.Error, KeyboardInterrupt) as exc:  # the ledger write or the index check itself failed
        failure = UnitFailed(i, unit, exc)
    except UnitFailed as exc:
        failure = exc
    else:
        return
    with runner._signals.held():
        outcome = _recover(runner, f, units, failure, before)
    step = f"step {i + 1} of {total} (line {unit.line})"
    reason = _pg_message(failure.error)
    if isinstance(failure.error, InvalidIndex):
        reason = f"the index {failure.error} was left INVALID by the build (it was dropped)"
    raise MigrationError(f"{f.name}: {step} failed: {reason}; {outcome}") from None


def _prepare_index(conn: psycopg.Connection, unit: Unit, resuming: bool) -> Optional[set[tuple[str, str]]]:
    """Before a CREATE INDEX CONCURRENTLY step: drop the INVALID index an interrupted build of this very index
    left; return the INVALID indexes already on the table (not this step's), or None when the step is done
    (resuming, and the named index exists and is valid)."""
    target = unit.index
    assert target is not None
    if target.name:
        leftover = progress.invalid_indexes(conn, target)
        if leftover:
            progress.drop_indexes(conn, leftover)
        if resuming and not target.if_not_exists and progress.valid_index_exists(conn, target):
            return None
        return set()
    return progress.invalid_indexes(conn, target)


def _recover(
    runner: Runner, f: MigrationFile, units: list[Unit], failed: UnitFailed, before: set[tuple[str, str]]
) -> str:
    """After a failed step: reconnect if needed, drop what an interrupted index build left, and undo the file
    when anything of it is committed. Returns what the database looks like now."""
    total = len(units)
    conn = runner._reconnect()
    if conn is None:
        return (
            f"the connection was lost and the server did not come back: the ledger records how far it got "
            f"(`dbguard migrate status`); then `dbguard migrate up` resumes, or `dbguard migrate rollback "
            f"{f.name}` undoes it"
        )
    try:
        if failed.unit.index is not None:
            bad = progress.invalid_indexes(conn, failed.unit.index) - before
            if bad:
                progress.drop_indexes(conn, bad)
        row = runner._ledger_row(f.name)
        built = failed.unit.index is not None and progress.valid_index_exists(conn, failed.unit.index)
    except psycopg.Error as exc:
        return f"cleaning up failed too ({_pg_message(exc)}): see `dbguard migrate status`"
    done = row.steps_done or 0 if row is not None and row.partial else 0
    needs_undo = any(u.changes_schema for u in units[:done]) or (
        not failed.unit.transactional and failed.unit.changes_schema and (failed.unit.index is None or built)
    )
    if not needs_undo:
        if row is not None:
            try:
                progress.forget(conn, f.name)
            except psycopg.Error as exc:
                return f"nothing was changed, but its ledger row could not be removed ({_pg_message(exc)})"
        return "nothing was changed (its transaction was rolled back)"
    half = f"half-applied at step {done} of {total}, as the ledger records"
    if f.rollback_path is None:
        return f"it stays {half}, and there is no rollback file: fix the cause and run `dbguard migrate up` to resume"
    try:
        rb_units = parse_units(read_text(f.rollback_path), f.rollback_path.name)
        _run_units(conn, rb_units, lock_retries=max(runner.lock_retries, 3), final=lambda c: progress.forget(c, f.name))
    except MigrationError as exc:
        return f"its rollback could not be read ({exc}); it stays {half}"
    except UnitFailed as rb:
        return (
            f"its rollback {f.rollback_path.name} failed too at line {rb.unit.line} ({_pg_message(rb.error)}); "
            f"it stays {half}: `dbguard migrate up` resumes, `dbguard migrate rollback {f.name}` retries the undo"
        )
    return f"{f.rollback_path.name} was applied: the database is as it was before"
