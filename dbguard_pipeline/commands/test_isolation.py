"""dbguard test-isolation: prove tenant isolation by trying cross-tenant access, table by table (rolled back)."""

from __future__ import annotations

import argparse
import sys

from dbguard_pipeline.commands._args import add_database_arguments

DESCRIPTION = (
    "Prove tenant isolation the way an attacker would: as the application's role with tenant A's context, try to "
    "read, insert, update and delete tenant B's rows and to move A's rows to B, on every tenant table, inside "
    "transactions that are rolled back. Exit 0 when every probe held, 1 when any leaked, 2 on usage or "
    "connection errors."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    parser.add_argument(
        "--table",
        action="extend",
        nargs="+",
        metavar="T",
        dest="tables",
        help="only these tables or views (schema.table or an unambiguous name; repeatable)",
    )
    parser.add_argument("--format", choices=("text", "json", "junit"), default="text", help="output format")
    parser.add_argument("--out", metavar="FILE", help="write the report here (default: standard output)")
    parser.add_argument("--tenant-a", metavar="ID", help="the tenant to act as (default: the first tenant by key)")
    parser.add_argument("--tenant-b", metavar="ID", help="the tenant to attack (default: the second tenant by key)")
    parser.add_argument(
        "--no-test-rows",
        action="store_false",
        dest="test_rows",
        default=None,
        help="insert nothing, not even rolled back (a rolled-back row still extends a table whose last page is "
        "full): what needs a test row (a table without rows of two tenants, such as an empty one, or a write "
        "that can be proven only by making it) is not probed (config: probe_test_rows)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 also when a probe could not run (default: reported, exit code unaffected)",
    )
    parser.add_argument(
        "--group-by",
        choices=("table", "command"),
        default="table",
        help="text: group the problems (LEAK, error, not probed) by table (default) or by command",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="text: also list the isolated relations (the full grid)"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar on standard error (shown only on a terminal)"
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the text report, LEAK in red (auto: when writing to a terminal and NO_COLOR is unset)",
    )


def run(args: argparse.Namespace) -> int:
    from dbguard_pipeline import services
    from dbguard_pipeline.commands.output import write_output
    from dbguard_pipeline.commands.progress import progress
    from dbguard_pipeline.config import load_config
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.report import use_color

    if bool(args.tenant_a) != bool(args.tenant_b):
        raise DbguardError("give both --tenant-a and --tenant-b, or neither")
    config = load_config(args.config)
    dsn = services.resolve_dsn(args.dsn)
    tenants = (args.tenant_a, args.tenant_b) if args.tenant_a else None
    with progress(quiet=args.quiet, color=use_color("auto", sys.stderr)) as bar:
        bar.phase("introspecting the schema, choosing tenants A and B")
        report = services.probe(dsn, config, args.tables, tenants=tenants, test_rows=args.test_rows)
    if args.format == "json":
        text = report.to_json()
    elif args.format == "junit":
        text = report.to_junit()
    else:
        to_file = bool(args.out) and args.out != "-"
        color = args.color == "always" or (not to_file and use_color(args.color))
        text = report.to_text(group_by=args.group_by, verbose=args.verbose, color=color)
    write_output(text, args.out)
    s = report.summary()
    if args.out:
        print(
            f"wrote {args.out}: {s['tables']} relations, {s['probes']} probes, {s['leaks']} leaks in "
            f"{s['leaking_tables']} relations, {s['not_probed']} not probed",
            file=sys.stderr,
        )
    if s["leaks"] or s["errors"]:
        return 1
    if args.strict and s["not_probed"]:
        return 1
    return 0
