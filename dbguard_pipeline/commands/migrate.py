"""dbguard migrate: apply, list or roll back migrations with a ledger."""

from __future__ import annotations

import argparse

from dbguard_pipeline.commands._args import add_database_arguments

DESCRIPTION = (
    "Apply pending migrations in order (up, the default), list them (status) or undo one (rollback NAME). "
    "A ledger (dbguard.schema_migrations) records name, checksum, time and duration; an applied file whose "
    "checksum changed stops the run; each file runs in transactions except its '-- dbguard:no-transaction' "
    "steps, and each completed step is recorded, so after a crash status says how far it got and up resumes; "
    "a failure after a committed step applies the file's rollback; a rolled-back migration is applied again by "
    "the next up, in its place in the order. With require_approval: true in dbguard.yaml, up "
    "refuses (before applying anything) a pending migration without a valid approval in DIR/approvals/ (see "
    "dbguard fix, which also backs up, verifies and undoes on regression). SIGTERM is handled like Ctrl-C. Needs "
    "--dsn or $DBGUARD_DATABASE_URL (never the demo database)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "command",
        nargs="?",
        default="up",
        choices=("up", "status", "rollback"),
        help="up (default) | status | rollback NAME",
    )
    parser.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="rollback: the migration to undo; up: apply up to and including this one",
    )
    add_database_arguments(parser)
    parser.add_argument(
        "--dir", default="migrations", metavar="DIR", help="the migrations folder (default: migrations/)"
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would run, change nothing")
    parser.add_argument(
        "--lock-retries",
        type=int,
        default=0,
        metavar="N",
        help="retry a transaction that hit lock_timeout up to N times (default 0)",
    )


def run(args: argparse.Namespace) -> int:
    from dbguard_pipeline.config import load_config
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.pg.dsn import describe_dsn
    from dbguard_pipeline.services import fix_outcomes, migrator
    from dbguard_pipeline.text import escape_controls

    config = load_config(args.config)
    runner = migrator(
        args.dsn,
        args.dir,
        lock_retries=args.lock_retries,
        log=lambda line: print(line, flush=True),
        require_approval=config.require_approval,
    )
    where = describe_dsn(runner.dsn)

    if args.command == "status":
        rows = runner.status()
        if not rows:
            print(f"no migrations in {args.dir}")
        try:  # what dbguard fix did last: a hint, never a reason for status to fail
            last = {r.name: r for r in reversed(fix_outcomes(runner.dsn))} if rows else {}
        except DbguardError:
            last = {}
        for state, name, detail in rows:
            print(f"{state:<8} {name}{'  ' + escape_controls(detail) if detail else ''}")
            attempt = last.get(name)
            if attempt is not None and state in ("pending", "HALF-APPLIED") and attempt.outcome != "applied+verified":
                print(f"         last dbguard fix attempt: {escape_controls(attempt.line())}")
        return 1 if any(state in ("CHANGED", "HALF-APPLIED") for state, _, _ in rows) else 0

    if args.command == "rollback":
        if not args.name:
            raise DbguardError("rollback needs the migration NAME (see dbguard migrate status)")
        result = runner.rollback(args.name, dry_run=args.dry_run)
        verb = "would roll back" if args.dry_run else "rolled back"
        print(f"{verb} {result.name} on {where}" + ("" if args.dry_run else f" in {result.duration_s:.2f}s"))
        return 0

    if args.dry_run:
        plan = runner.plan(args.name)
        if not plan:
            print(f"nothing to apply on {where}")
        for f, units in plan:
            kinds = ", ".join("tx" if u.transactional else "no-tx" for u in units)
            refused = runner.gate(f) if runner.gate is not None else None
            print(
                f"would apply {f.name}: {len(units)} steps ({kinds})"
                + ("" if f.rollback_path else "  [no rollback file]")
                + ("  [REFUSED: not approved]" if refused else "")
            )
        return 0
    results = runner.up(args.name)
    if not results:
        if not runner.files():
            print(f"nothing to apply on {where}: no migrations in {args.dir}")
        else:
            print(f"nothing to apply on {where}: every migration in {args.dir} is applied")
        return 0
    total = sum(r.duration_s for r in results)
    resumed = [f"{r.name} resumed at step {r.resumed_at} of {r.units}" for r in results if r.resumed_at]
    print(
        f"{len(results)} migration{'s' if len(results) != 1 else ''} applied on {where} in {total:.2f}s"
        + (f" ({'; '.join(resumed)})" if resumed else "")
    )
    return 0
