"""dbguard generate-migration: write a safe fix migration and its exact rollback, linted and round-trip tested."""

from __future__ import annotations

import argparse
import sys

from dbguard_pipeline.commands._args import add_database_arguments

DESCRIPTION = (
    "Write a safe fix migration and its exact rollback: ACTION TABLE [ARGS...], or --all for one migration per "
    "fixable finding of a fresh audit. Actions: add-tenant-isolation TABLE, fix-rls-policy TABLE, "
    "add-composite-index TABLE COL1 [COL2 ...], add-foreign-key TABLE [REFTABLE [COLUMN]], optimize-policy TABLE "
    "(the table's policies evaluated once per query, meaning unchanged: dbguard analyze). "
    "Every file passes squawk and is applied, checked and rolled back on a scratch copy before it is written."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        metavar="ACTION",
        help="add-tenant-isolation | fix-rls-policy | add-composite-index | add-foreign-key | optimize-policy",
    )
    parser.add_argument("table", nargs="?", metavar="TABLE", help="schema.table (or a table name when unambiguous)")
    parser.add_argument(
        "args", nargs="*", metavar="ARGS", help="columns (add-composite-index); REFTABLE [COLUMN] (add-foreign-key)"
    )
    parser.add_argument("--all", action="store_true", help="one migration per fixable finding of a fresh audit")
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="with --all: also run dbguard analyze and add optimize-policy for each table where it proved the "
        "rewrite faster on a scratch copy",
    )
    parser.add_argument("--out-dir", default="migrations", metavar="DIR", help="where to write (default: migrations/)")
    add_database_arguments(parser)
    parser.add_argument(
        "--tenant-default",
        metavar="VALUE",
        help="add-tenant-isolation: the tenant for rows that reach none through foreign keys",
    )
    test = parser.add_mutually_exclusive_group()
    test.add_argument(
        "--test",
        dest="test",
        action="store_const",
        const="yes",
        help="require the round trip on a scratch copy (default: run it when the server allows)",
    )
    test.add_argument("--no-test", dest="test", action="store_const", const="no", help="skip the round trip")
    parser.add_argument("--dry-run", action="store_true", help="print the forward and rollback SQL, write nothing")
    parser.add_argument("--timestamp", metavar="YYYYMMDDHHMMSS", help="file name timestamp (default: now, UTC)")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar on standard error (shown only on a terminal)"
    )
    parser.set_defaults(test="auto")


def _out(line: str = "") -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    from dbguard_pipeline.commands.progress import progress
    from dbguard_pipeline.config import load_config
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.report import use_color
    from dbguard_pipeline.services import generate_fixes

    if args.all and args.action:
        raise DbguardError("give either --all or ACTION TABLE, not both")
    if args.analyze and not args.all:
        raise DbguardError("--analyze goes with --all (for one table: generate-migration optimize-policy TABLE)")
    if not args.all and (not args.action or not args.table):
        raise DbguardError("usage: dbguard generate-migration ACTION TABLE [ARGS...] (or --all)")
    config = load_config(args.config)
    with progress(quiet=args.quiet, color=use_color("auto", sys.stderr)) as bar:
        bar.phase("auditing, then planning the fixes" if args.all else f"planning {args.action}")
        result = generate_fixes(
            args.dsn,
            config,
            action=None if args.all else args.action,
            table=args.table,
            args=args.args,
            tenant_default=args.tenant_default,
            out_dir=args.out_dir,
            timestamp=args.timestamp,
            round_trip=args.test,
            dry_run=args.dry_run,
            with_analyze=args.analyze,
        )
    for line in result.skipped:
        _out(f"skip  {line}")
    for line in result.manual:
        _out(f"manual  {line}")
    if result.nothing is not None:
        _out(f"nothing to fix: {result.nothing}")
        return 0
    if not result.migrations and not result.rejected:
        _out(f"nothing to fix: no fixable finding without a migration in {result.database}")
        return 0
    if args.dry_run:
        for name, text in result.texts.items():
            _out(f"-- ===== {name}")
            sys.stdout.write(text)
        return 0
    if result.lint is not None:
        _out(result.lint.summary())
        for problem in [*map(str, result.lint.violations), *result.lint.parse_errors]:
            print(f"  {problem}", file=sys.stderr)
    if result.round_trip_skipped is not None:
        _out(f"round trip skipped: {result.round_trip_skipped} (use --test to require it)")
    elif result.round_trip is not None:
        _out(result.round_trip.summary())
        for trip in result.round_trip.trips:
            _out(f"  {trip.line()}")
            for v in trip.verdicts.lines() if trip.verdicts is not None else []:
                _out(f"      {v}")
    if result.failure is not None:
        for m in result.rejected:
            print(
                f"rejected {args.out_dir.rstrip('/')}/rejected/{m.file_names(result.timestamp)[0]}: {m.rejected}",
                file=sys.stderr,
            )
        raise result.failure
    out_dir = args.out_dir.rstrip("/")
    for m in result.migrations:
        fwd, rb = m.file_names(result.timestamp)
        _out(f"wrote {out_dir}/{fwd}")
        _out(f"      {out_dir}/{rb}")
        for w in m.what:
            _out(f"  - {w}")
    n = len(result.written)
    _out(f"{n // 2} migration{'s' if n != 2 else ''} written; review, then: dbguard migrate up --dir {args.out_dir}")
    if result.rejected:
        for m in result.rejected:
            fwd, _rb = m.file_names(result.timestamp)
            print(f"rejected {out_dir}/rejected/{fwd}: {m.rejected}", file=sys.stderr)
        print(
            f"{len(result.rejected)} migration{'s' if len(result.rejected) != 1 else ''} failed the round trip "
            f"(written to {out_dir}/rejected/ with the reason, not applied by migrate)",
            file=sys.stderr,
        )
        return 1
    return 0
