"""dbguard analyze: what row level security costs each tenant table, measured as the app role, with fixes
proven faster on a scratch copy."""

from __future__ import annotations

import argparse
import sys

from dbguard_pipeline.commands._args import add_database_arguments

DESCRIPTION = (
    "Measure what row level security costs each tenant table: a few representative statements (count, a page by "
    "primary key, a look-up, the join to the parent) run as the application's role with a real tenant's context "
    "and as the owner with the explicit tenant predicate, under EXPLAIN ANALYZE in read-only transactions that are "
    "rolled back. The plans name the cause; each fix is applied to a scratch copy and measured before it is "
    "proposed. Exit 0, or 1 with --fail-over X when a table's overhead is X or more; 2 on usage or connection "
    "errors."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    parser.add_argument(
        "--table",
        action="extend",
        nargs="+",
        metavar="T",
        dest="tables",
        help="only these tables (schema.table or an unambiguous name; repeatable)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    parser.add_argument("--out", metavar="FILE", help="write the report here (default: standard output)")
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        metavar="N",
        help="timed runs per statement and role, after a warm-up run (default 3; the median counts)",
    )
    parser.add_argument(
        "--no-prove",
        action="store_true",
        help="list the fixes without applying them to a scratch copy (nothing is proposed)",
    )
    parser.add_argument(
        "--migrations-dir", metavar="DIR", help="write each proposed fix as a migration and its rollback into DIR"
    )
    parser.add_argument(
        "--fail-over", type=float, metavar="X", help="exit 1 when a tenant table's overhead is X or more (for CI)"
    )
    parser.add_argument("--timestamp", metavar="YYYYMMDDHHMMSS", help="timestamp of the migration file names")


def run(args: argparse.Namespace) -> int:
    from dbguard_pipeline import services
    from dbguard_pipeline.analyze.render import to_text
    from dbguard_pipeline.commands.output import write_output
    from dbguard_pipeline.config import load_config
    from dbguard_pipeline.errors import DbguardError

    if args.runs < 1 or args.runs > 50:
        raise DbguardError("--runs must be between 1 and 50")
    config = load_config(args.config)
    dsn = services.resolve_dsn(args.dsn)
    report = services.analyze(dsn, config, args.tables, runs=args.runs, prove=not args.no_prove)
    text = report.to_json() if args.format == "json" else to_text(report)
    write_output(text, args.out)
    proposed = [s for t in report.tables for s in t.proposed]
    if args.migrations_dir and proposed:
        from dbguard_pipeline.fixes.script import rendered, timestamp, write_files

        unique = list({id(s): s for s in proposed}.values())
        files = write_files(args.migrations_dir, rendered([s.migration for s in unique], timestamp(args.timestamp)))
        print(f"wrote {len(files)} migration files to {args.migrations_dir}", file=sys.stderr)
    s = report.summary()
    if args.out:
        print(
            f"wrote {args.out}: {s['measured']} tables measured, max overhead {s['max_overhead']}x, "
            f"{s['suggestions']} suggestions proven",
            file=sys.stderr,
        )
    return 1 if args.fail_over is not None and report.slow(args.fail_over) else 0
