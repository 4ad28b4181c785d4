"""dbguard validate: the audit, reported for people (text) or CI (json, sarif, junit)."""

from __future__ import annotations

import argparse
import sys

from dbguard_pipeline.commands._args import add_database_arguments

DESCRIPTION = (
    "Audit row level security, tenancy, data integrity, performance and security of a PostgreSQL "
    "database (read-only) and report the findings. Exit 0 when nothing is at or above --fail-on, 1 "
    "otherwise, 2 on usage, connection or permission errors."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    parser.add_argument(
        "--format", choices=("text", "json", "sarif", "junit"), default="text", help="report format (default: text)"
    )
    parser.add_argument("--out", metavar="FILE", help="write the report here (default: standard output)")
    parser.add_argument(
        "--fail-on",
        choices=("critical", "warning"),
        default="critical",
        help="exit 1 when a finding has this severity or higher (default: critical)",
    )
    parser.add_argument(
        "--rule",
        action="append",
        metavar="ID",
        dest="rules",
        help="run only this rule (repeatable; ids in docs/rules.md)",
    )
    parser.add_argument(
        "--exclude-rule", action="append", metavar="ID", dest="exclude_rules", default=[],
        help="do not run this rule (repeatable; adds to the config's exclude_rules; dbguard rules lists the ids)",
    )
    parser.add_argument(
        "--no-data", action="store_true", help="skip the data metrics (row counts, NULLs, orphans): schema rules only"
    )


def run(args: argparse.Namespace) -> int:
    from dbguard_pipeline import services
    from dbguard_pipeline.audit import selected_rules
    from dbguard_pipeline.commands.output import write_output
    from dbguard_pipeline.config import load_config
    from dbguard_pipeline.report import render

    config = load_config(args.config)
    selected_rules(args.rules + args.exclude_rules if args.rules else args.exclude_rules)  # unknown ids: before connecting
    if args.exclude_rules:
        config = config.model_copy(update={"exclude_rules": (*config.exclude_rules, *args.exclude_rules)})
    selected_rules(args.rules, config)
    dsn = services.resolve_dsn(args.dsn)
    result = services.audit(dsn, config, rules=args.rules, with_metrics=not args.no_data)
    color = None if not args.out or args.out == "-" else False
    write_output(
        render(result, args.format, fail_on=args.fail_on, color=color if args.format == "text" else None), args.out
    )
    code = result.exit_code(args.fail_on)
    if args.out and args.out != "-":
        s = result.summary()
        extra = f", {len(result.not_measured)} not measured" if result.not_measured else ""
        print(
            f"wrote {args.out}: {s['critical']} critical, {s['warning']} warning, {s['info']} info, "
            f"{s['ignored']} ignored{extra} ({result.database})",
            file=sys.stderr,
        )
    return code
